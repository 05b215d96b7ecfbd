from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"

    def ready(self) -> None:
        # The engine, accounts and the CRM call up only through these hooks (DESIGN.md section 3).
        from accounts.hooks import on_team_usage, on_user_deactivated
        from conversations.consumer import team_inbox_consumer
        from conversations.contact_links import conversations_link_new_contacts
        from conversations.handling import conversations_reroute_for
        from conversations.notices import reply_sender
        from conversations.selectors import message_in_visible_conversation
        from conversations.team_usage import inbox_team_usage
        from crm.hooks import on_contacts_created
        from inboxes.access import register_message_reader
        from inboxes.consumers import register_mail_consumer
        from inboxes.models import MailboxKind
        from notifications.sends import register_sender_resolver

        register_mail_consumer(MailboxKind.TEAM, team_inbox_consumer)
        register_sender_resolver(reply_sender)
        on_user_deactivated(conversations_reroute_for)
        on_team_usage(inbox_team_usage)
        on_contacts_created(conversations_link_new_contacts)
        register_message_reader(message_in_visible_conversation)
