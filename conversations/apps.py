from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"

    def ready(self) -> None:
        # The engine and accounts call up only through these hooks (DESIGN.md section 3).
        from accounts.hooks import on_team_usage, on_user_deactivated
        from conversations.consumer import team_inbox_consumer
        from conversations.handling import conversations_reroute_for
        from conversations.selectors import message_in_visible_conversation
        from conversations.team_usage import inbox_team_usage
        from inboxes.access import register_message_reader
        from inboxes.consumers import register_mail_consumer
        from inboxes.models import MailboxKind

        register_mail_consumer(MailboxKind.TEAM, team_inbox_consumer)
        on_user_deactivated(conversations_reroute_for)
        on_team_usage(inbox_team_usage)
        register_message_reader(message_in_visible_conversation)
