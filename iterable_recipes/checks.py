"""What `recipes check`, `recipes serve` and each flow run verify before any person's data moves.

Three layers, recipe by recipe: the settings a recipe's parts need (by variable name), its files (each
named with its key and problem), and, unless offline, the live vendors, read without sending personal
data: the Iterable key and data center, the consent policy against GET /api/channels and
/api/messageTypes, the sync mappings' field types against GET /api/users/getFields, the list syncs'
lists against GET /api/lists, a Marketo token, the warehouse connection and each sync's source
query. Flows run only the live checks they use, and trust one that passed for
RECIPES_CHECK_CACHE_SECONDS (remembered in the app database).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from iterable_recipes.clients.errors import ApiError, is_retryable
from iterable_recipes.clients.iterable import BASE_URLS, IterableClient
from iterable_recipes.clients.limiter import NoLimiter
from iterable_recipes.config_files import ConfigError
from iterable_recipes.customersdot.mapping import load_mapping
from iterable_recipes.masking import mask_emails
from iterable_recipes.optouts.consent import load_consent_policy
from iterable_recipes.resources import Resources
from iterable_recipes.settings import (
    MASKING_KEY_HINT,
    PART_SETTINGS,
    RECIPE_PARTS,
    RECIPES,
    Part,
    Recipe,
    Settings,
)
from iterable_recipes.sync.definitions import SYNCS_DIR, SyncDefinition, read_sync_definitions
from iterable_recipes.sync.validate import field_type_problems, validate_against_warehouse

log = logging.getLogger(__name__)

LiveCheck = Literal["iterable_key", "consent", "field_types", "lists", "marketo", "warehouse"]
# The live checks each recipe needs, in the order they run (the key first: the others use it).
RECIPE_LIVE_CHECKS: dict[Recipe, tuple[LiveCheck, ...]] = {
    "customersdot": ("iterable_key",),
    "optouts": ("iterable_key", "consent", "marketo"),
    "sync": ("iterable_key", "field_types", "lists", "warehouse"),
}
CACHE_PREFIX = "check:"


class CheckFailed(ConfigError):
    """A check did not pass; the message names the setting, file or vendor answer, never a secret.

    ``retryable``: the vendor could not answer now (an outage, a 429), which says nothing about the
    configuration; a flow then goes on and meets the outage where its retries handle it.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def _vendor_failed(vendor: str, exc: ApiError) -> CheckFailed:
    """A CheckFailed for a vendor's answer, masked, retryable when the answer is."""
    return CheckFailed(f"{vendor}: {mask_emails(str(exc))}", retryable=is_retryable(exc))


@dataclass(frozen=True)
class Finding:
    """One line of the report: what was checked, whether it holds, and what was found."""

    check: str
    ok: bool
    detail: str


def _parts(recipes: Iterable[Recipe]) -> list[Part]:
    """The parts ``recipes`` use, each once, in a stable order."""
    return list(dict.fromkeys(part for recipe in recipes for part in RECIPE_PARTS[recipe]))


def setting_findings(
    settings: Settings, recipes: Sequence[Recipe], *, masking_key_generated: bool = False
) -> list[Finding]:
    """Every setting the parts of ``recipes`` need and lack, by variable name (with the block instead);
    ``masking_key_generated``: serve generates RECIPES_MASKING_KEY (embedded), so its absence is fine."""
    findings = []
    for part in _parts(recipes):
        users = ", ".join(r for r in recipes if part in RECIPE_PARTS[r])
        block = PART_SETTINGS[part][1]
        instead = f" (or name a Prefect block in {block})" if block else ""
        for name in settings.missing(part):
            findings.append(Finding(name, False, f"not set; needed by {users}{instead}"))
    if settings.limiter_backend == "postgres" and not settings.limiter_postgres_url:
        findings.append(Finding("LIMITER_POSTGRES_URL", False, "not set; LIMITER_BACKEND is postgres"))
    if settings.recipes_masking_key is None and not masking_key_generated:
        # Every recipe logs people: untagged masks cannot be told apart, so production needs the key.
        detail = f"not set; the key of the tag beside each masked address (make one with {MASKING_KEY_HINT})"
        findings.append(Finding("RECIPES_MASKING_KEY", False, detail))
    if not findings:
        findings.append(Finding("settings", True, f"every setting {', '.join(recipes)} need is set"))
    if settings.recipes_masking_key is None and masking_key_generated:
        findings.append(Finding("RECIPES_MASKING_KEY", True, "not set: generated for the embedded stack"))
    return findings


def webhook_findings(settings: Settings, recipes: Sequence[Recipe]) -> list[Finding]:
    """The webhook secrets ``recipes`` need and lack (the receiver refuses those webhooks until set)."""
    parts: list[Part] = [p for p in _parts(recipes) if p.endswith("_webhook")]
    return [
        Finding(name, False, "not set: its webhook is refused until it is")
        for part in parts
        for name in settings.missing(part)
    ]


def file_findings(settings: Settings, recipes: Sequence[Recipe]) -> list[Finding]:
    """Each file ``recipes`` read, checked on its own: a bad one is named with its key and problem."""
    findings = []
    if "customersdot" in recipes:
        findings.append(_file("event mapping", lambda: f"{len(load_mapping().events)} event type(s) mapped"))
    if "optouts" in recipes:
        findings.append(_file("consent policy", lambda: _policy_summary(settings)))
    if "sync" in recipes:
        good, bad = read_sync_definitions(settings.sync_definitions_dir or SYNCS_DIR)
        findings += [
            Finding(f"sync {name}", True, f"{_shown(d.path)}: valid") for name, d in sorted(good.items())
        ]
        findings += [Finding(f"sync file {path.name}", False, text) for path, text in sorted(bad.items())]
        if not good and not bad:
            findings.append(Finding("sync definitions", True, "none in the folder: no sync to run"))
    return findings


def _shown(path: str) -> str:
    """``path`` relative to the working folder when under it, else its name (no machine's layout)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return Path(path).name


def _file(check: str, read: Callable[[], str]) -> Finding:
    try:
        return Finding(check, True, read())
    except ConfigError as exc:
        return Finding(check, False, str(exc))


def _policy_summary(settings: Settings) -> str:
    policy = load_consent_policy(settings.consent_policy_path)
    return f"{len(policy.channels)} channel(s), {len(policy.message_types)} message type(s)"


# ---- live checks: each returns what it found, or raises CheckFailed --------------------------------


def check_iterable_key(resources: Resources, regions: Mapping[str, str] = BASE_URLS) -> str:
    """The key is accepted where the settings point; refused there but accepted by another data center
    names the ITERABLE_REGION to set."""
    settings = resources.settings
    where = settings.iterable_url if not settings.iterable_credentials_block else "the block's data center"
    try:
        count = len(resources.iterable.get_channels())
    except ApiError as exc:
        if exc.status == 401 and not settings.iterable_base_url and not settings.iterable_credentials_block:
            hint = _region_accepting(settings, regions)
            if hint:
                raise CheckFailed(f"ITERABLE_API_KEY is refused by {where} but accepted by {hint}") from None
        raise _vendor_failed(f"Iterable at {where}", exc) from None
    return f"accepted by {where} ({count} channel(s))"


def _region_accepting(settings: Settings, regions: Mapping[str, str]) -> str | None:
    """The other data center that accepts the key, as "<url>: set ITERABLE_REGION=<region>"."""
    assert settings.iterable_api_key is not None  # a 401 came back, so a key was sent
    for region, url in regions.items():
        if region == settings.iterable_region:
            continue
        key = settings.iterable_api_key.get_secret_value()
        client = IterableClient(key, base_url=url, limiter=NoLimiter())
        try:
            client.get_channels()
        except ApiError:
            continue
        finally:
            client.close()
        return f"{url}: set ITERABLE_REGION={region}"
    return None


def check_consent(resources: Resources) -> str:
    """The consent policy agrees with the project's channels and message types."""
    client = resources.iterable
    policy = resources.consent_policy
    try:
        policy.check_against(client.get_channels(), client.get_message_types())
    except ApiError as exc:
        raise _vendor_failed("Iterable", exc) from None
    except ConfigError as exc:
        raise CheckFailed(str(exc)) from None
    return "agrees with Iterable's channels and message types"


def check_field_types(resources: Resources, definitions: Sequence[SyncDefinition]) -> str:
    """Every mapped user field is sent as a type Iterable holds it as (or is new to the project)."""
    try:
        fields = resources.iterable.get_user_fields()
    except ApiError as exc:
        raise _vendor_failed("Iterable", exc) from None
    problems = [p for defn in definitions for p in field_type_problems(defn, fields)]
    if problems:
        raise CheckFailed("\n".join(problems))
    return f"{len(definitions)} sync(s) fit the project's {len(fields)} user field(s)"


def check_lists(resources: Resources, definitions: Sequence[SyncDefinition]) -> str:
    """Every list sync's ``list_id`` names a static list of the project (GET /api/lists): a list that is
    not there, or a dynamic one, would refuse every batch."""
    syncs = [defn for defn in definitions if defn.is_list]
    if not syncs:
        return "no sync names a list"
    try:
        lists = {item.id: item for item in resources.iterable.get_lists()}
    except ApiError as exc:
        raise _vendor_failed("Iterable", exc) from None
    problems = []
    for defn in syncs:
        found = lists.get(int(defn.list_id or 0))
        if found is None:
            problems.append(
                f"{defn.path}: list_id: list {defn.list_id} is not in the Iterable project "
                f"({len(lists)} list(s) there)"
            )
        elif found.list_type != "Standard":
            problems.append(
                f"{defn.path}: list_id: list {defn.list_id} is a {found.list_type} list; only a static "
                "(Standard) list takes members"
            )
    if problems:
        raise CheckFailed("\n".join(problems))
    return f"{len(syncs)} list sync(s) name static lists of the project"


def check_marketo(resources: Resources) -> str:
    """Marketo hands out a token for the client credentials."""
    try:
        with resources.marketo() as client:
            client.authenticate()
    except ApiError as exc:
        raise _vendor_failed("Marketo", exc) from None
    except ValueError as exc:  # settings the block or the variables lack
        raise CheckFailed(f"Marketo: {exc}") from None
    return "the client credentials get a token"


def check_warehouse(resources: Resources, definitions: Sequence[SyncDefinition]) -> str:
    """The warehouse connects and each sync's source query compiles with its mapped columns."""
    try:
        with resources.warehouse() as conn:
            problems = []
            for defn in definitions:
                try:
                    validate_against_warehouse(defn, conn)
                except ConfigError as exc:
                    problems.append(str(exc))
    except Exception as exc:  # the connector's errors name the account and the problem, not secrets
        raise CheckFailed(f"the warehouse refused the connection: {type(exc).__name__}: {exc}") from None
    if problems:
        raise CheckFailed("\n".join(problems))
    return f"connected; {len(definitions)} source query(ies) compile"


LIVE_CHECK_NAMES: dict[LiveCheck, str] = {
    "iterable_key": "Iterable API key",
    "consent": "consent policy vs Iterable",
    "field_types": "sync field types vs Iterable",
    "lists": "sync lists vs Iterable",
    "marketo": "Marketo credentials",
    "warehouse": "warehouse and source queries",
}


def run_live_check(resources: Resources, name: LiveCheck, definitions: Sequence[SyncDefinition] = ()) -> str:
    """Run the live check ``name`` (the sync checks over ``definitions``)."""
    if name == "iterable_key":
        return check_iterable_key(resources)
    if name == "consent":
        return check_consent(resources)
    if name == "field_types":
        return check_field_types(resources, definitions)
    if name == "lists":
        return check_lists(resources, definitions)
    if name == "marketo":
        return check_marketo(resources)
    return check_warehouse(resources, definitions)


def live_findings(
    resources: Resources, recipes: Sequence[Recipe], definitions: Sequence[SyncDefinition]
) -> list[Finding]:
    """The live checks of ``recipes``, each once; after a refused Iterable key the checks that need it
    are reported as not run rather than failing with the same cause."""
    findings: list[Finding] = []
    names = list(dict.fromkeys(name for recipe in recipes for name in RECIPE_LIVE_CHECKS[recipe]))
    key_failed = False
    for name in names:
        label = LIVE_CHECK_NAMES[name]
        if key_failed and name in ("consent", "field_types", "lists"):
            findings.append(Finding(label, False, "not run: the Iterable key was refused"))
            continue
        try:
            findings.append(Finding(label, True, run_live_check(resources, name, definitions)))
        except Exception as exc:  # CheckFailed, a part its settings cannot build, a block not found
            shown = mask_emails(str(exc))
            detail = shown if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {shown}"
            findings.append(Finding(label, False, detail))
            key_failed = key_failed or name == "iterable_key"
    return findings


def run_checks(settings: Settings, recipes: Sequence[Recipe] = RECIPES, *, offline: bool = False,
               resources: Resources | None = None, masking_key_generated: bool = False,
               ) -> list[Finding]:  # fmt: skip
    """Every finding for ``recipes``: settings, files, then (unless ``offline``, and only when the
    settings hold) the live vendors."""
    findings = setting_findings(settings, recipes, masking_key_generated=masking_key_generated)
    findings += file_findings(settings, recipes)
    if offline or not all(f.ok for f in findings):
        return findings
    definitions = list(read_sync_definitions(settings.sync_definitions_dir or SYNCS_DIR)[0].values())
    with resources or Resources(settings) as live:
        return findings + live_findings(live, recipes, definitions if "sync" in recipes else [])


# ---- the flows' checks at start, trusted for a while once passed -------------------------------------


def fingerprint(resources: Resources, name: LiveCheck, definitions: Sequence[SyncDefinition] = ()) -> str:
    """What a passed check depends on, hashed (so the app database never holds a key): the endpoint,
    the credentials, and what was checked against it (the consent policy, the sync mappings)."""
    settings = resources.settings
    if name == "marketo":
        secret = settings.marketo_client_secret.get_secret_value() if settings.marketo_client_secret else ""
        parts = [settings.marketo_credentials_block, settings.marketo_base_url, settings.marketo_client_id]
    else:
        secret = settings.iterable_api_key.get_secret_value() if settings.iterable_api_key else ""
        parts = [settings.iterable_credentials_block, settings.iterable_url]
    if name == "consent":
        parts.append(resources.consent_policy.model_dump_json())
    if name in ("field_types", "warehouse", "lists"):
        parts += [d.mapping_fingerprint for d in definitions]
    raw = json.dumps([name, secret, *parts], default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def check_at_start(
    resources: Resources,
    name: LiveCheck,
    definitions: Sequence[SyncDefinition] = (),
    *,
    clock: Callable[[], float] = time.time,
) -> str:
    """Run the live check ``name`` unless it passed within RECIPES_CHECK_CACHE_SECONDS for the same
    fingerprint; raises CheckFailed (a failure is never remembered, so the next run checks again)."""
    settings = resources.settings
    key = CACHE_PREFIX + name
    print_ = fingerprint(resources, name, definitions)
    remembered = _remembered(resources, key)
    if remembered and remembered.get("fingerprint") == print_:
        age = clock() - float(str(remembered.get("at", 0)))
        if 0 <= age < settings.recipes_check_cache_seconds:
            return f"passed {age:.0f} s ago (trusted for {settings.recipes_check_cache_seconds:.0f} s)"
    detail = run_live_check(resources, name, definitions)
    try:
        resources.inbox.set_cursor(key, json.dumps({"fingerprint": print_, "at": clock()}))
    except Exception as exc:  # a cache that cannot be written only means checking again next time
        log.warning(
            "could not remember the %s check (%s); the next run checks again", name, type(exc).__name__
        )
    return detail


def _remembered(resources: Resources, key: str) -> dict[str, object] | None:
    """The stored record of a passed check, or None (never stored, unreadable, no app database)."""
    try:
        raw = resources.inbox.get_cursor(key)
        value = json.loads(raw) if raw else None
    except Exception:  # unreadable: check again, which is always safe
        return None
    return value if isinstance(value, dict) else None
