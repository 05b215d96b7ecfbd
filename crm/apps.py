from django.apps import AppConfig


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = "CRM"

    def ready(self) -> None:
        # The engine calls up only through its hooks (DESIGN.md section 3).
        from crm.message_access import message_on_readable_email
        from inboxes.access import register_message_reader

        register_message_reader(message_on_readable_email)
