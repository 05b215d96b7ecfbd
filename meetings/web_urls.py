"""The meetings tool's pages: Settings > Meetings (login) and the public booking pages."""

from django.urls import path

from meetings import public_views, views

urlpatterns = [
    path("settings/meetings/", views.settings_meetings, name="settings-meetings"),
    path("settings/meetings/remove/", views.meetings_remove, name="settings-meetings-remove"),
    path("settings/meetings/links/new/", views.link_create, name="settings-meetings-link-create"),
    path("settings/meetings/links/<uuid:pk>/", views.link_edit, name="settings-meetings-link"),
    path(
        "settings/meetings/links/<uuid:pk>/delete/",
        views.link_delete,
        name="settings-meetings-link-delete",
    ),
    path(
        "settings/meetings/bookings/<uuid:pk>/cancel/",
        views.booking_cancel,
        name="settings-meetings-booking-cancel",
    ),
    # Public, no login: a booking's own pages (its token in the path), then the link's.
    path("meet/booking/<str:token>/", public_views.booking_done, name="meet-booking"),
    path("meet/booking/<str:token>/invite.ics", public_views.booking_ics, name="meet-booking-ics"),
    path(
        "meet/booking/<str:token>/cancel/",
        public_views.booking_cancel,
        name="meet-booking-cancel",
    ),
    path(
        "meet/booking/<str:token>/reschedule/",
        public_views.booking_reschedule,
        name="meet-booking-reschedule",
    ),
    path("meet/<slug:slug>/", public_views.meet, name="meet"),
]
