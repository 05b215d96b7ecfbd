from django import forms


class InboxCreateForm(forms.Form):
    name = forms.CharField(max_length=200, label="Inbox name")


class InboxSettingsForm(forms.Form):
    from_name = forms.CharField(max_length=200, required=False, label="From name")
