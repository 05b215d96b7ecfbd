from django import forms


class MeetingsForm(forms.Form):
    address = forms.CharField(max_length=320, label="Meetings address")
