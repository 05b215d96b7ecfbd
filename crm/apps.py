from django.apps import AppConfig


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = "CRM"

    def ready(self) -> None:
        # The engine and notifications call up only through their hooks (DESIGN.md section 3).
        from crm.consumer import personal_mail_consumer
        from crm.message_access import message_on_readable_email
        from crm.notices import crm_email_sender
        from inboxes.access import register_message_reader
        from inboxes.consumers import register_mail_consumer
        from inboxes.models import MailboxKind
        from notifications.sends import register_sender_resolver

        register_mail_consumer(MailboxKind.PERSONAL, personal_mail_consumer)
        register_message_reader(message_on_readable_email)
        register_sender_resolver(crm_email_sender)
