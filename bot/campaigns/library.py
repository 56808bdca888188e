"""Everything under `scripts/` loaded and checked as one version: scripts, sales, campaigns.

`announce check` prints its issues; a running worker holds the last good version and
reloads when a file changes (checked at most once a second, by modification time), the
way the persona reloads: a broken edit is logged with its `file:line` issues and the
previous version keeps serving.
"""

from __future__ import annotations

import asyncio

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from jinja2 import Template

from bot.campaigns.campaign import CHANNELS, Campaign, CampaignFile, TemplateMessage
from bot.campaigns.sale import Sale, load_sale
from bot.campaigns.sandbox import ScriptEnvironment, as_view
from bot.campaigns.scripts import VARIABLES, ScriptTemplate, check_renders, compile_source, load_script
from bot.persona.issues import PersonaIssue as Issue
from bot.persona.yaml_source import parse_yaml

log = logging.getLogger("siyu.campaigns")

CAMPAIGNS_FILE = "campaigns.yaml"
SCRIPT_SUFFIX = ".j2"


@dataclass(frozen=True)
class TemplateFields:
    """A campaign's (or slot's) OA template message, its field values compiled in the sandbox."""

    spec: TemplateMessage
    fields: dict[str, Template]
    env: ScriptEnvironment

    def render(self, variables: dict[str, Any]) -> dict[str, str]:
        views = {key: as_view(value) for key, value in variables.items() if key in VARIABLES}
        return {name: self.env.render_bounded(template, views).strip() for name, template in self.fields.items()}


@dataclass(frozen=True)
class ScriptLibrary:
    root: Path
    scripts: dict[str, ScriptTemplate]
    sales: dict[str, Sale]  # by path relative to root, as campaigns name them
    campaigns: dict[str, Campaign]
    #: (campaign, slot) → its template message (slot's own, else the campaign's); absent: none.
    templates: dict[tuple[str, str], TemplateFields] = field(default_factory=dict)

    def template_for(self, campaign: str, slot: str) -> TemplateFields | None:
        return self.templates.get((campaign, slot))

    def campaign(self, name: str) -> Campaign:
        try:
            return self.campaigns[name]
        except KeyError:
            raise KeyError(f"no campaign {name!r}; campaigns: {', '.join(self.campaigns) or 'none'}") from None

    def sale_of(self, campaign: Campaign) -> Sale:
        return self.sales[campaign.sale]


#: What scripts render with when no sale file loaded (so a broken sale file doesn't hide script mistakes).
SAMPLE_SALE: dict[str, Any] = {
    "name": "样例秒杀", "starts_at": "2026-12-09 20:00", "ends_at": "2026-12-09 22:00", "date": "12月9日",
    "weekday": "周三", "start_time": "20:00", "end_time": "22:00",
    "items": [{"name": "样例商品", "original_price": "59.90", "flash_price": "29.90", "saving": "30.00",
               "discount": "5折", "stock": 100, "limit_per_person": 2, "link": "", "miniprogram_path": "pages/x"}],
}


def sample_recipients(segments: list[str]) -> list[dict[str, Any]]:
    """Recipients a script must render for: one per segment, one we know nothing about."""
    samples: list[dict[str, Any]] = [
        {"name": "", "tags": [], "source_channel": "", "segment": segments[0] if segments else "", "coupons": []},
    ]
    for segment in segments:
        samples.append({"name": "小美", "tags": [segment, "宝宝0-6月"], "source_channel": "taobao_card",
                        "segment": segment,
                        "coupons": [{"title": "满99减20", "code": "SAMPLE-CODE", "valid_to": "2026-12-31"}]})
    return samples


def load_library(
    root: Path, now: datetime | None = None, *, refuse_past_start: bool = True
) -> tuple[ScriptLibrary | None, list[Issue]]:
    """Load and check `root`; (library, []) when usable, else (None, every issue found)."""
    now = now or datetime.now(UTC)
    env = ScriptEnvironment()
    issues: list[Issue] = []
    scripts: dict[str, ScriptTemplate] = {}
    for file in sorted(root.rglob(f"*{SCRIPT_SUFFIX}")):
        script, problems = load_script(file, env)
        issues += problems
        if script is None:
            continue
        if script.name in scripts:
            issues.append(Issue(file, 2, f"script name '{script.name}' is also used by {scripts[script.name].file}"))
            continue
        scripts[script.name] = script

    campaigns_file = root / CAMPAIGNS_FILE
    campaigns: dict[str, Campaign] = {}
    sales: dict[str, Sale] = {}
    templates: dict[tuple[str, str], TemplateFields] = {}
    if campaigns_file.exists():
        document, problems = parse_yaml(campaigns_file, campaigns_file.read_bytes())
        issues += problems
        if document is not None and not problems:
            try:
                parsed = CampaignFile.model_validate({"campaigns": document.data or []})
            except ValidationError as error:
                for problem in error.errors():
                    loc = [part for part in problem["loc"]][1:]
                    issues.append(Issue(campaigns_file, document.line_of(loc),
                                        f"{'.'.join(map(str, loc))}: {str(problem['msg']).removeprefix('Value error, ')}"))
                parsed = None
            for index, campaign in enumerate(parsed.campaigns if parsed else []):
                line = document.line_of([index])
                if campaign.name in campaigns:
                    issues.append(Issue(campaigns_file, line, f"campaign '{campaign.name}' appears twice"))
                    continue
                campaigns[campaign.name] = campaign
                if campaign.channel not in CHANNELS:
                    issues.append(Issue(campaigns_file, document.line_of([index, "channel"]),
                                        f"channel '{campaign.channel}': announcements go out on {', '.join(CHANNELS)}"))
                if campaign.channel != "wechat_oa" and (campaign.template or any(s.template for s in campaign.slots)):
                    issues.append(Issue(campaigns_file, document.line_of([index, "template"]),
                                        "template messages are for wechat_oa campaigns (the 48-hour window)"))
                for slot in campaign.slots:
                    spec = slot.template or campaign.template
                    if spec is None or campaign.channel != "wechat_oa":
                        continue
                    where = ([index, "slots", campaign.slots.index(slot), "template"] if slot.template
                             else [index, "template"])
                    compiled, problems = _compile_template_message(env, spec, campaigns_file, document.line_of(where))
                    issues += problems
                    if compiled is not None:
                        templates[(campaign.name, slot.name)] = compiled
                if campaign.sale not in sales:
                    sale, problems = load_sale(root / campaign.sale, now, refuse_past_start=refuse_past_start)
                    issues += problems
                    if sale is not None:
                        sales[campaign.sale] = sale
                for slot_index, slot in enumerate(campaign.slots):
                    script = scripts.get(slot.script)
                    where = document.line_of([index, "slots", slot_index])
                    if script is None:
                        issues.append(Issue(campaigns_file, where, f"slot '{slot.name}' names script '{slot.script}', "
                                            f"which does not exist; scripts: {', '.join(sorted(scripts)) or 'none'}"))
                    elif campaign.channel not in script.channels:
                        issues.append(Issue(campaigns_file, where, f"script '{slot.script}' is not written for channel "
                                            f"'{campaign.channel}' (its channels: {', '.join(script.channels)})"))
    # Render each script with the sale of each campaign that uses it (or the first sale).
    for name, script in scripts.items():
        users = [(c, s) for c in campaigns.values() for s in c.slots if s.script == name]
        sale_variables = [sales[c.sale].variables(now) for c, _ in users if c.sale in sales] or [
            sale.variables(now) for sale in list(sales.values())[:1]
        ] or [SAMPLE_SALE]
        segments = sorted({seg.name for c, _ in users for seg in c.audience.segments} | {script.default_segment})
        samples = [
            {"sale": sale, "recipient": recipient, "campaign": {"name": "sample", "title": "样例"}, "slot": "sample"}
            for sale in sale_variables
            for recipient in sample_recipients(segments)
        ]
        if samples:
            issues += check_renders(script, samples)
    for (campaign_name, slot_name), compiled in templates.items():
        campaign = campaigns[campaign_name]
        segments = [seg.name for seg in campaign.audience.segments]
        sale_variables = [sales[campaign.sale].variables(now)] if campaign.sale in sales else [SAMPLE_SALE]
        for sale in sale_variables:
            for recipient in sample_recipients(segments):
                try:
                    compiled.render({"sale": sale, "recipient": recipient, "campaign": {"name": "sample", "title": "样例"},
                                     "slot": slot_name})
                except Exception as exc:  # noqa: BLE001 - an admin template's failure is a finding
                    issues.append(Issue(campaigns_file, 1, f"campaign '{campaign_name}' slot '{slot_name}': template "
                                        f"message fields fail to render: {type(exc).__name__}: {exc}"))
                    break
    if issues:
        return None, issues
    return ScriptLibrary(root, scripts, sales, campaigns, templates), []


def _compile_template_message(
    env: ScriptEnvironment, spec: TemplateMessage, file: Path, line: int
) -> tuple[TemplateFields | None, list[Issue]]:
    fields: dict[str, Template] = {}
    issues: list[Issue] = []
    for name, source in spec.fields.items():
        template, problems = compile_source(env, source, file)
        # Field values are one-liners inside campaigns.yaml: report them at the template's line.
        issues += [Issue(file, line, f"template field '{name}': {problem.message}") for problem in problems]
        if template is not None:
            fields[name] = template
    return (TemplateFields(spec, fields, env), []) if not issues else (None, issues)


class LiveLibrary:
    """The current good version of `scripts/`, reloaded when a file there changes."""

    def __init__(self, root: Path, *, min_interval: float = 1.0) -> None:
        self.root = root
        self._min_interval = min_interval
        self._checked_at = 0.0
        self._stamp: tuple[tuple[str, int], ...] = ()
        self._library: ScriptLibrary | None = None
        self.issues: list[Issue] = []

    def current(self) -> ScriptLibrary:
        now = time.monotonic()
        if self._library is None or now - self._checked_at >= self._min_interval:
            self._checked_at = now
            stamp = self._fingerprint()
            if stamp != self._stamp or self._library is None:
                library, issues = load_library(self.root, refuse_past_start=False)
                self._stamp = stamp
                self.issues = issues
                if library is not None:
                    self._library = library
                    log.info("campaigns.scripts_loaded root=%s campaigns=%d", self.root, len(library.campaigns))
                else:
                    for issue in issues:
                        log.error("campaigns.script_issue %s", issue)
        if self._library is None:
            raise ScriptsUnusable(self.issues)
        return self._library

    async def acurrent(self) -> ScriptLibrary:
        """`current()` for code on an event loop: walking `scripts/` and re-checking its templates
        (file I/O, compiling, sample renders) run in a thread, so a serving loop never waits on them."""
        if self._library is not None and time.monotonic() - self._checked_at < self._min_interval:
            return self._library
        return await asyncio.to_thread(self.current)

    def _fingerprint(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in self.root.rglob("*") if p.is_file()))


class ScriptsUnusable(RuntimeError):
    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("scripts/ has problems:\n" + "\n".join(str(issue) for issue in issues))
