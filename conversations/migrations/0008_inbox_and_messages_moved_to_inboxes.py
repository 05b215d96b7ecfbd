"""Inbox, Message and Attachment now belong to the engine (inboxes 0005): the foreign keys
follow them and the old models leave Django's state. Nothing changes in the database."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0007_message_lz4_compression'),
        ('inboxes', '0005_move_inbox_and_messages_from_conversations'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
            migrations.RemoveField(
                model_name='attachment',
                name='message',
            ),
            migrations.RemoveField(
                model_name='inbox',
                name='account',
            ),
            migrations.RemoveField(
                model_name='inbox',
                name='mailbox',
            ),
            migrations.RemoveField(
                model_name='inbox',
                name='visible_to_teams',
            ),
            migrations.AlterField(
                model_name='routingrule',
                name='inbox',
                field=models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='routing', to='inboxes.inbox'),
            ),
            migrations.AlterField(
                model_name='conversation',
                name='inbox',
                field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='conversations', to='inboxes.inbox'),
            ),
            migrations.AlterField(
                model_name='conversationmessage',
                name='inbox',
                field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='inboxes.inbox'),
            ),
            migrations.RemoveField(
                model_name='message',
                name='account',
            ),
            migrations.AlterField(
                model_name='conversationmessage',
                name='message',
                field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to='inboxes.message'),
            ),
            migrations.AlterField(
                model_name='conversation',
                name='messages',
                field=models.ManyToManyField(related_name='conversations', through='conversations.ConversationMessage', to='inboxes.message'),
            ),
            migrations.DeleteModel(
                name='Attachment',
            ),
            migrations.DeleteModel(
                name='Inbox',
            ),
            migrations.DeleteModel(
                name='Message',
            ),
            ],
        ),
    ]
