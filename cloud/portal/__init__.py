"""The web portal: server-rendered pages for tenants, owners, engineers and the
manufacturer's staff, with live updates over Server-Sent Events (`cloud.portal.app`)."""
