from django.apps import AppConfig


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = "CRM"

    def ready(self) -> None:
        # The engine calls up only through its hooks (DESIGN.md section 3).
        from crm.consumer import personal_mail_consumer
        from inboxes.consumers import register_mail_consumer
        from inboxes.models import MailboxKind

        register_mail_consumer(MailboxKind.PERSONAL, personal_mail_consumer)
