"""The meetings tool's REST API (links, bookings, public slots and bookings).

The meetings connection's endpoint lives in meetings/connection_api.py.
"""
