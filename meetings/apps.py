from django.apps import AppConfig


class MeetingsConfig(AppConfig):
    name = "meetings"

    def ready(self) -> None:
        # The engine calls up only through these hooks (DESIGN.md section 3).
        from inboxes.holds import register_holder_finder
        from inboxes.page_sections import register_email_page_section
        from meetings.selectors import meetings_address_holder
        from meetings.views import email_page_section

        register_holder_finder(meetings_address_holder)
        register_email_page_section(email_page_section)
