from django.apps import AppConfig


class MeetingsConfig(AppConfig):
    name = "meetings"

    def ready(self) -> None:
        # The engine calls up only through these hooks (DESIGN.md section 3).
        from inboxes.holds import HELD_AS_MEETINGS, AddressTool, register_address_tool
        from inboxes.page_sections import register_email_page_section
        from inboxes.secrets_rotation import register_secret_rotator
        from meetings.calendars.caldav import caldav_secrets_rotate
        from meetings.sections import email_page_section
        from meetings.selectors import meetings_address_holder, meetings_holds
        from meetings.services import meetings_release

        register_address_tool(
            AddressTool(
                held_as=HELD_AS_MEETINGS,
                holder=meetings_address_holder,
                release=meetings_release,
                holds=meetings_holds,
            )
        )
        register_email_page_section(email_page_section)
        register_secret_rotator(caldav_secrets_rotate)
