"""Which site table applies where: the tables are owned by the bodies (``models/bodies``).

A model that contains bodies (a body itself, or embedder → body → head) uses each body's table,
its patterns prefixed with the body's module name. A model without a body is OFA's
encoder-decoder (or the toy with its names) and uses OFA's table, unchanged since before bodies.
Every lookup that finds nothing is an error naming the table and the site, so a typo or a method
that does not apply to a body never trains nothing silently.
"""

import re
from typing import Iterator, List, NamedTuple, Optional, Tuple

from torch import nn

from ..bodies.base import Body, SiteTable, find_bodies
from ..bodies.ofa import OFA_SITES


class Scope(NamedTuple):
    """One table applied under one module-name prefix ("" = the whole model)."""

    prefix: str
    table: SiteTable
    body: Optional[Body]

    def full(self, pattern: str) -> str:
        return rf"{re.escape(self.prefix)}\.(?:{pattern})" if self.prefix else pattern

    def contains(self, name: str) -> bool:
        return not self.prefix or name.startswith(self.prefix + ".")

    def describe(self) -> str:
        where = f" at {self.prefix!r}" if self.prefix else ""
        return f"{self.body.kind if self.body is not None else 'OFA'} (table {self.table.name!r}{where})"


def scopes(model: nn.Module) -> List[Scope]:
    """The bodies' tables, or OFA's table for a model without a body."""
    bodies = find_bodies(model)
    if bodies:
        return [Scope(prefix, body.sites, body) for prefix, body in bodies.items()]
    return [Scope("", OFA_SITES, None)]


def match_site(model: nn.Module, site: str) -> List[Tuple[str, nn.Module]]:
    """Modules of ``site`` under every scope; an error when a scope lacks the site or none matches."""
    found: List[Tuple[str, nn.Module]] = []
    for scope in scopes(model):
        if site not in scope.table.sites:
            raise ValueError(f"PETL site {site!r} does not exist on {scope.describe()}; "
                             f"its sites are {sorted(scope.table.sites)}")
        pattern = re.compile(scope.full(scope.table.sites[site]))
        found += [(n, m) for n, m in model.named_modules() if pattern.fullmatch(n)]
    if not found:
        sample = [n for n, _ in model.named_modules() if n][:8]
        raise ValueError(f"PETL site {site!r} (pattern {[s.table.sites[site] for s in scopes(model)]}) matches "
                         f"no module of {type(model).__name__}; module names start with {sample}")
    return found


def matching_parameters(model: nn.Module, key: str) -> Iterator[str]:
    """Parameter names (tied ones under every name) matching ``key`` of the tables:
    ``"bitfit:<scope>"``, ``"head"`` or ``"never_train"``."""
    for scope in scopes(model):
        if key.startswith("bitfit:"):
            raw = scope.table.bitfit.get(key.split(":", 1)[1])
            if raw is None:
                raise ValueError(f"--bitfit-scope={key.split(':', 1)[1]!r}: {scope.describe()} offers "
                                 f"{sorted(scope.table.bitfit)}")
        else:
            raw = getattr(scope.table, key)
        pattern = re.compile(scope.full(raw))
        for name, _ in model.named_parameters(remove_duplicate=False):
            if scope.contains(name) and pattern.fullmatch(name):
                yield name


def never_trained(model: nn.Module) -> set:
    """Parameters no opt-in may select: the tables' ``never_train``, and the native embedding of
    bodies fed by an outside embedder (``Body.use_external_inputs``)."""
    names = set(matching_parameters(model, "never_train"))
    for scope in scopes(model):
        if scope.body is not None and scope.body.external_inputs:
            pattern = re.compile(scope.full(scope.table.embedding))
            names.update(n for n, _ in model.named_parameters(remove_duplicate=False) if pattern.fullmatch(n))
    return names


def layer_norm_parameters(model: nn.Module) -> Iterator[str]:
    """Parameters of the LayerNorm modules inside the scopes (``--train-layernorm``)."""
    for scope in scopes(model):
        for mname, m in model.named_modules(remove_duplicate=False):
            if isinstance(m, scope.table.layer_norm_types) and (scope.contains(mname) or mname == scope.prefix):
                yield from (f"{mname}.{n}" if mname else n for n, _ in m.named_parameters())
