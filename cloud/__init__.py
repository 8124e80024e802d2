"""The cloud twin: verified ingest, twin store, command lifecycle, service platform, API.

Built by a later issue.
"""
