from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from accounts.api import MeView, TeamViewSet, TokenView, UserViewSet
from audit.api import AuditEventViewSet
from conversations.api import ConversationViewSet, InboxViewSet
from crm.api import ContactViewSet
from crm.email_api import ContactEmailsView, EmailDetailView, PreferencesView
from crm.sequence_api import EnrollmentViewSet, SequenceViewSet
from inboxes.api import MailboxViewSet, UserAddressReleaseView
from inboxes.push.gmail_hook import gmail_push_hook
from inboxes.push.microsoft_hook import microsoft_hook
from inboxes.raw_views import MessageRawView
from meetings.api import (
    BookingViewSet,
    LinkViewSet,
    PublicBookingsView,
    PublicSlotsView,
)
from meetings.connection_api import MeetingsConnectionView
from notifications.api import NotificationSettingsView, NotificationViewSet

router = SimpleRouter()
router.register("users", UserViewSet, basename="user")
router.register("teams", TeamViewSet, basename="team")
router.register("mailboxes", MailboxViewSet, basename="mailbox")
router.register("inboxes", InboxViewSet, basename="inbox")
router.register("audit", AuditEventViewSet, basename="audit")
router.register("conversations", ConversationViewSet, basename="conversation")
router.register("notifications", NotificationViewSet, basename="notification")
router.register("contacts", ContactViewSet, basename="contact")
router.register("sequences", SequenceViewSet, basename="sequence")
router.register("enrollments", EnrollmentViewSet, basename="enrollment")
router.register("meetings/links", LinkViewSet, basename="meetings-link")
router.register("meetings/bookings", BookingViewSet, basename="meetings-booking")

api_v1 = [
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("me/", MeView.as_view(), name="api-me"),
    path(
        "me/notification-settings/",
        NotificationSettingsView.as_view(),
        name="api-notification-settings",
    ),
    path("me/preferences/", PreferencesView.as_view(), name="api-me-preferences"),
    path("contacts/<uuid:pk>/emails/", ContactEmailsView.as_view(), name="api-contact-emails"),
    path("emails/<uuid:pk>/", EmailDetailView.as_view(), name="api-email"),
    # R7 by address (the mailbox release is /mailboxes/{id}/release/): the engine's view,
    # beside the users the accounts app serves.
    path(
        "users/<uuid:pk>/release/",
        UserAddressReleaseView.as_view(),
        name="api-user-address-release",
    ),
    path("meetings/connection/", MeetingsConnectionView.as_view(), name="api-meetings-connection"),
    path("public/links/<slug:slug>/slots/", PublicSlotsView.as_view(), name="api-public-slots"),
    path(
        "public/links/<slug:slug>/bookings/",
        PublicBookingsView.as_view(),
        name="api-public-bookings",
    ),
    path("messages/<uuid:pk>/raw/", MessageRawView.as_view(), name="api-message-raw"),
    *router.urls,
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("django-admin/", admin.site.urls),
    path("hooks/microsoft/", microsoft_hook, name="hook-microsoft"),
    path("hooks/gmail/", gmail_push_hook, name="hook-gmail"),
    path("", include("config.web_urls")),
]

# Under /api/ Django's own error answers are JSON in the API's error shape.
handler400 = "core.error_pages.bad_request"
handler403 = "core.error_pages.permission_denied"
handler404 = "core.error_pages.page_not_found"
handler500 = "core.error_pages.server_error"
