"""Page sections rendered on their own: the macros of ``*_parts.html`` as a template module.

The pages render these macros in place; the live stream (:mod:`.live`) and the overview's cache
(:mod:`.overview`) render them here, with the same helpers the page has, so a section looks the
same whichever way it was made.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from markupsafe import Markup

from collector.web.auth import User
from collector.web.render import WebContext, hm, when


def macro_module(request: Request, name: str, user: User) -> Any:
    """The page's macro template as a module, with the page's helpers in its context."""
    c: WebContext = request.app.state.ctx
    env = request.app.state.templates.env
    return env.get_template(name).make_module({"me": user, "when": lambda ts: when(ts, c.tz),
                                               "hm": lambda ts: hm(ts, c.tz), "request": request})


def render_parts(request: Request, name: str, user: User, data: dict[str, Any], parts: list[str],
                 prefix: str) -> dict[str, Markup]:
    """Each macro in ``parts`` applied to ``data``, keyed ``prefix + part`` (the element's id)."""
    module = macro_module(request, name, user)
    return {f"{prefix}{p}": Markup(getattr(module, p)(data)) for p in parts}
