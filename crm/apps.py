from django.apps import AppConfig


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = "CRM"

    def ready(self) -> None:
        from crm.notices import crm_email_sender
        from notifications.sends import register_sender_resolver

        register_sender_resolver(crm_email_sender)
