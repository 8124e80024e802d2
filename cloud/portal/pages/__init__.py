"""The portal's pages, one module per area; `PAGE_MODULES` is what `install_portal` mounts."""

from __future__ import annotations

from cloud.portal.pages import (
    auth,
    boilers,
    commands,
    engineer,
    jobs,
    lifecycle,
    notifications,
    owner,
    staff,
    tenant,
)

PAGE_MODULES = (
    auth,
    boilers,
    commands,
    notifications,
    tenant,
    owner,
    jobs,
    engineer,
    staff,
    lifecycle,
)
