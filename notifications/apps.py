from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        # The engine reports through these hooks; it never imports this app.
        from inboxes import events
        from notifications.incidents import mailbox_health_changed, sync_gap_found
        from notifications.sends import bounce_reported, send_outcome_reported

        events.on_mailbox_health(mailbox_health_changed)
        events.on_send_outcome(send_outcome_reported)
        events.on_sync_gap(sync_gap_found)
        events.on_bounce(bounce_reported)
