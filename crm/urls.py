"""The contact pages, under /contacts/ (config/web_urls.py)."""

from django.urls import path

from crm import import_views, views

urlpatterns = [
    path("", views.contact_list_page, name="contacts"),
    path("new/", views.contact_create_page, name="contact-create"),
    path("import/", import_views.contacts_import_page, name="contacts-import"),
    path("import/confirm/", import_views.contacts_import_confirm, name="contacts-import-confirm"),
    path("<uuid:pk>/", views.contact_page, name="contact"),
    path("<uuid:pk>/edit/", views.contact_edit_page, name="contact-edit"),
    path("<uuid:pk>/delete/", views.contact_delete_page, name="contact-delete"),
    path("<uuid:pk>/notes/", views.contact_note_add, name="contact-note-add"),
]
