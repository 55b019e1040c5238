"""Sphinx extension: link a class named by its defining (private) module to its public page.

Type hints carry a class's defining path (``theory._spec_schedule.AttnTemperature``), while the
API reference documents it where users import it (``theory.AttnTemperature``). When a
cross-reference to ``PACKAGE._private.Name`` finds no target, this resolves it to
``PACKAGE.Name`` if that is documented; anything else stays unresolved (and fails the build).
"""

from __future__ import annotations

from docutils import nodes


def _public_target(env, target: str) -> str | None:
    parts = target.split(".")
    if len(parts) < 3 or not any(p.startswith("_") for p in parts[1:-1]):
        return None
    candidate = f"{parts[0]}.{parts[-1]}"
    return candidate if candidate in env.get_domain("py").objects else None


def resolve_public(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    public = _public_target(env, node.get("reftarget", ""))
    if public is None:
        return None
    domain = env.get_domain("py")
    docname = domain.objects[public].docname
    ref = nodes.reference("", "", internal=True, reftitle=public,
                          refuri=app.builder.get_relative_uri(node["refdoc"], docname) + "#" + public)
    ref.append(contnode)
    return ref


def setup(app):
    app.connect("missing-reference", resolve_public)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
