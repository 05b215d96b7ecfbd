"""Inbox, Message and Attachment move from conversations to the engine (Django's state only).

The tables keep their names (``db_table``), so nothing in the database moves: a database
migrated from before the move keeps every row. The content types follow the models so
that anything pointing at them keeps pointing at the same rows.
"""

import django.db.models.deletion
import uuid
from django.conf import settings
from django.db import migrations, models

MOVED = ("inbox", "message", "attachment")


def content_types_to(apps, schema_editor, source: str, target: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    for model in MOVED:
        if ContentType.objects.using(db).filter(app_label=target, model=model).exists():
            continue
        ContentType.objects.using(db).filter(app_label=source, model=model).update(app_label=target)


def forwards(apps, schema_editor):
    content_types_to(apps, schema_editor, "conversations", "inboxes")


def backwards(apps, schema_editor):
    content_types_to(apps, schema_editor, "inboxes", "conversations")


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0002_user_is_available'),
        ('contenttypes', '0002_remove_content_type_name'),
        ('conversations', '0007_message_lz4_compression'),
        ('inboxes', '0004_mailbox_sync_requested'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
            migrations.CreateModel(
                name='Message',
                fields=[
                    ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                    ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                    ('updated_at', models.DateTimeField(auto_now=True)),
                    ('dedupe_key', models.CharField(max_length=64)),
                    ('direction', models.CharField(choices=[('inbound', 'Inbound'), ('outbound', 'Outbound')], default='inbound', max_length=10)),
                    ('message_id', models.CharField(blank=True, db_index=True, max_length=998)),
                    ('in_reply_to', models.CharField(blank=True, max_length=998)),
                    ('references', models.JSONField(blank=True, default=list)),
                    ('thread_root', models.CharField(blank=True, db_index=True, max_length=64)),
                    ('subject', models.TextField(blank=True)),
                    ('from_name', models.CharField(blank=True, max_length=320)),
                    ('from_address', models.CharField(blank=True, db_index=True, max_length=320)),
                    ('to', models.JSONField(blank=True, default=list)),
                    ('cc', models.JSONField(blank=True, default=list)),
                    ('sent_at', models.DateTimeField(blank=True, null=True)),
                    ('text', models.TextField(blank=True)),
                    ('html', models.TextField(blank=True, help_text='Sanitised with nh3 at ingestion.')),
                    ('has_remote_images', models.BooleanField(default=False)),
                    ('headers', models.JSONField(blank=True, default=dict)),
                    ('raw', models.FileField(blank=True, max_length=500, upload_to='raw/%Y/%m/%d/')),
                    ('raw_size', models.PositiveIntegerField(default=0)),
                    ('parse_error', models.TextField(blank=True)),
                    ('account', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.account')),
                ],
                options={
                    'db_table': 'conversations_message',
                    'ordering': ['sent_at', 'created_at'],
                },
            ),
            migrations.CreateModel(
                name='Attachment',
                fields=[
                    ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                    ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                    ('updated_at', models.DateTimeField(auto_now=True)),
                    ('filename', models.CharField(blank=True, max_length=255)),
                    ('content_type', models.CharField(blank=True, max_length=255)),
                    ('size', models.PositiveIntegerField(default=0)),
                    ('content_id', models.CharField(blank=True, max_length=255)),
                    ('inline', models.BooleanField(default=False)),
                    ('file', models.FileField(max_length=500, upload_to='attachments/%Y/%m/%d/')),
                    ('message', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='attachments', to='inboxes.message')),
                ],
                options={
                    'db_table': 'conversations_attachment',
                    'ordering': ['created_at'],
                },
            ),
            migrations.AlterField(
                model_name='mailboxmessage',
                name='message',
                field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='inboxes.message'),
            ),
            migrations.AlterField(
                model_name='outboxitem',
                name='message',
                field=models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, related_name='outbox', to='inboxes.message'),
            ),
            migrations.CreateModel(
                name='Inbox',
                fields=[
                    ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                    ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                    ('updated_at', models.DateTimeField(auto_now=True)),
                    ('name', models.CharField(max_length=200)),
                    ('from_name', models.CharField(blank=True, max_length=200)),
                    ('signature', models.TextField(blank=True, help_text='Added below every reply.')),
                    ('restricted', models.BooleanField(default=False, help_text='Only members of the chosen teams (and admins) see this inbox.')),
                    ('account', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='inboxes', to='accounts.account')),
                    ('mailbox', models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='inbox', to='inboxes.mailbox')),
                    ('visible_to_teams', models.ManyToManyField(blank=True, related_name='inboxes', to='accounts.team')),
                ],
                options={
                    'db_table': 'conversations_inbox',
                    'ordering': ['name'],
                    'constraints': [models.UniqueConstraint(fields=('account', 'name'), name='unique_inbox_name_per_account')],
                },
            ),
            migrations.AddConstraint(
                model_name='message',
                constraint=models.UniqueConstraint(fields=('account', 'dedupe_key'), name='unique_message_per_account'),
            ),
            ],
        ),
        migrations.RunPython(forwards, backwards),
    ]
