"""Browser tests: the portal in Debian's Chromium, driven by Playwright, on a live stack."""
