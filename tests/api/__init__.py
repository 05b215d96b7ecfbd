"""Tests of the REST contract across apps: auth, users, errors, tenants, pagination, schema."""
