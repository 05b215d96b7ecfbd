from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from accounts import team_views, token_views, user_views
from accounts import views as accounts_views
from audit import views as audit_views
from conversations import overview_views, settings_views
from conversations import views as conversations_views
from crm import email_views, tracking_views
from inboxes import oauth_views, people_views, raw_views, server_prefill
from inboxes import views as inboxes_views
from meetings import connection_views as meetings_connection_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="settings-email"), name="home"),
    path("login/", accounts_views.LoginView.as_view(), name="login"),
    path("connect/<str:provider>/", oauth_views.connect_start, name="connect-start"),
    path("connect/<str:provider>/callback/", oauth_views.connect_callback, name="connect-callback"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password-reset/", user_views.PasswordResetView.as_view(), name="password-reset"),
    path(
        "password-reset/sent/",
        user_views.PasswordResetSentView.as_view(),
        name="password-reset-sent",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        user_views.PasswordResetConfirmView.as_view(),
        name="password-reset-confirm",
    ),
    path(
        "password-reset/done/",
        user_views.PasswordResetCompleteView.as_view(),
        name="password-reset-complete",
    ),
    path("invite/<uidb64>/<token>/", user_views.invite_accept, name="invite-accept"),
    path("settings/email/", inboxes_views.settings_email, name="settings-email"),
    path("settings/email/check/", inboxes_views.email_check, name="settings-email-check"),
    path("settings/email/test/", inboxes_views.email_test, name="settings-email-test"),
    path(
        "settings/email/servers/",
        server_prefill.server_settings,
        name="settings-email-servers",
    ),
    path("settings/mailboxes/<uuid:pk>/", inboxes_views.mailbox_detail, name="settings-mailbox"),
    path(
        "settings/mailboxes/<uuid:pk>/row/", inboxes_views.mailbox_row, name="settings-mailbox-row"
    ),
    path(
        "settings/mailboxes/<uuid:pk>/passwords/",
        inboxes_views.mailbox_passwords,
        name="settings-mailbox-passwords",
    ),
    path(
        "settings/mailboxes/<uuid:pk>/servers/",
        inboxes_views.mailbox_servers,
        name="settings-mailbox-servers",
    ),
    path(
        "settings/mailboxes/<uuid:pk>/send-limits/",
        inboxes_views.mailbox_send_limits,
        name="settings-mailbox-send-limits",
    ),
    path(
        "settings/mailboxes/<uuid:pk>/resync/",
        inboxes_views.mailbox_resync,
        name="settings-mailbox-resync",
    ),
    path(
        "settings/mailboxes/<uuid:pk>/import-history/",
        inboxes_views.mailbox_import_history,
        name="settings-mailbox-import-history",
    ),
    path(
        "settings/mailboxes/<uuid:pk>/test/",
        inboxes_views.mailbox_test,
        name="settings-mailbox-test",
    ),
    path(
        "settings/mailboxes/<uuid:pk>/disconnect/",
        inboxes_views.mailbox_disconnect,
        name="settings-mailbox-disconnect",
    ),
    path(
        "settings/mailboxes/<uuid:pk>/release/",
        people_views.mailbox_release,
        name="settings-mailbox-release",
    ),
    path(
        "settings/mailboxes/<uuid:pk>/transfer/",
        people_views.mailbox_transfer,
        name="settings-mailbox-transfer",
    ),
    # Settings > Meetings and the public booking pages /meet/...: meetings/web_urls.py.
    path("", include("meetings.web_urls")),
    path(
        "settings/meetings/calendar/consent/<str:provider>/",
        meetings_connection_views.calendar_consent,
        name="meetings-calendar-consent",
    ),
    path("settings/inboxes/", conversations_views.settings_inboxes, name="settings-inboxes"),
    # Create an inbox, step by step: its routes are urlpatterns in conversations/inbox_setup.py.
    path("", include("conversations.inbox_setup")),
    path(
        "settings/inboxes/<uuid:pk>/settings/",
        conversations_views.inbox_settings,
        name="settings-inbox-settings",
    ),
    path(
        "settings/inboxes/<uuid:pk>/delete/",
        conversations_views.inbox_delete,
        name="settings-inbox-delete",
    ),
    path(
        "settings/inboxes/<uuid:pk>/connect/",
        conversations_views.inbox_connect_team_email,
        name="settings-inbox-connect",
    ),
    path("settings/users/", people_views.settings_users, name="settings-users"),
    path("settings/users/new/", people_views.user_create, name="settings-user-create"),
    path(
        "settings/users/<uuid:pk>/deactivate/",
        people_views.user_set_active,
        {"active": False},
        name="settings-user-deactivate",
    ),
    path(
        "settings/users/<uuid:pk>/reactivate/",
        people_views.user_set_active,
        {"active": True},
        name="settings-user-reactivate",
    ),
    path(
        "settings/users/<uuid:pk>/release/",
        people_views.user_address_release,
        name="settings-user-address-release",
    ),
    path("settings/audit/", audit_views.settings_audit, name="settings-audit"),
    path(
        "settings/audit/export.csv",
        audit_views.settings_audit_export,
        name="settings-audit-export",
    ),
    path("settings/users/invite/", user_views.user_invite, name="settings-user-invite"),
    path("settings/users/<uuid:pk>/edit/", user_views.user_edit, name="settings-user-edit"),
    path(
        "settings/users/<uuid:pk>/password-reset/",
        user_views.user_password_reset,
        name="settings-user-password-reset",
    ),
    path(
        "settings/users/<uuid:pk>/invitation/",
        user_views.user_invite_resend,
        name="settings-user-invite-resend",
    ),
    path("settings/tokens/", token_views.settings_tokens, name="settings-tokens"),
    path(
        "settings/tokens/login-token/revoke/",
        token_views.login_token_revoke,
        name="settings-login-token-revoke",
    ),
    path(
        "settings/tokens/<uuid:pk>/revoke/",
        token_views.token_revoke,
        name="settings-token-revoke",
    ),
    # "Show original" of a message, wherever it shows (conversation, contact timeline).
    path("messages/<uuid:pk>/raw/", raw_views.message_raw, name="message-raw"),
    # The support inbox, /inbox/: its routes are urlpatterns in conversations/inbox_views.py.
    path("inbox/", include("conversations.inbox_views")),
    # The agent's helpers: mention suggestions, snooze, saved replies (agent_views.py).
    path("inbox/", include("conversations.agent_views")),
    path("", include("notifications.views")),
    path("contacts/", include("crm.urls")),
    # Sequences: its routes are urlpatterns in crm/sequence_views.py.
    path("sequences/", include("crm.sequence_views")),
]

# Settings > Inboxes > Routing and access, Settings > Users > Teams, the inbox overview.
urlpatterns += [
    path(
        "settings/inboxes/<uuid:pk>/routing/",
        settings_views.inbox_routing,
        name="settings-inbox-routing",
    ),
    path(
        "settings/inboxes/<uuid:pk>/visibility/",
        settings_views.inbox_visibility,
        name="settings-inbox-visibility",
    ),
    path(
        "settings/inboxes/<uuid:pk>/replies/",
        settings_views.inbox_replies,
        name="settings-inbox-replies",
    ),
    path(
        "settings/inboxes/<uuid:pk>/auto-replies/",
        settings_views.inbox_auto_replies,
        name="settings-inbox-auto-replies",
    ),
    # Saved replies and replying's own settings (conversations/agent_settings_views.py).
    path("settings/inboxes/<uuid:pk>/", include("conversations.agent_settings_views")),
    path("settings/teams/", team_views.settings_teams, name="settings-teams"),
    path("settings/teams/new/", team_views.team_create, name="settings-team-create"),
    path("settings/teams/<uuid:pk>/", team_views.team_update, name="settings-team-update"),
    path(
        "settings/teams/<uuid:pk>/delete/",
        team_views.team_delete,
        name="settings-team-delete",
    ),
    path("inbox/overview/<uuid:pk>/", overview_views.inbox_overview, name="inbox-overview"),
]

# The CRM: writing to a contact, the R10 preferences, and tracking (no login).
urlpatterns += [
    path("contacts/<uuid:contact_id>/email/", email_views.email_compose, name="contact-email"),
    path("settings/preferences/", email_views.settings_preferences, name="settings-preferences"),
    path("t/o/<str:token>", tracking_views.tracking_open_view, name="tracking-open"),
    path("t/c/<str:token>", tracking_views.tracking_click_view, name="tracking-click"),
]
