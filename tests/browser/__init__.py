"""Browser tests: Chromium driven by Playwright against the live server (marker: browser)."""
