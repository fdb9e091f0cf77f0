"""The operators' HTML status page: one table, no scripts, refreshes itself."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from html import escape

from services.health.schemas import HealthReport

COLOURS = {"up": "#1a7f37", "degraded": "#b08800", "down": "#cf222e", "unknown": "#6e7781",
           "ok": "#1a7f37"}


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    ago = max(0, int(time.time() - value.timestamp()))
    span = f"{ago}s" if ago < 120 else f"{ago // 60}m" if ago < 7200 else f"{ago // 3600}h" if ago < 172800 \
        else f"{ago // 86400}d"
    return f'<span title="{escape(value.isoformat())}">{escape(value.strftime("%Y-%m-%d %H:%M:%S"))} UTC ({span} ago)</span>'


def _badge(status: str) -> str:
    colour = COLOURS.get(status, "#6e7781")
    return f'<b style="color:#fff;background:{colour};padding:1px 8px;border-radius:4px">{escape(status)}</b>'


def render(report: HealthReport, refresh_sec: int = 10) -> str:
    rows = []
    for svc in report.services:
        strip = "".join(
            f'<span title="{escape(c.at.strftime("%H:%M:%S"))} {escape(c.status)}'
            f'{" " + escape(c.error) if c.error else ""}" style="display:inline-block;width:6px;height:14px;'
            f'margin-right:1px;background:{COLOURS.get(c.status, "#6e7781")}"></span>'
            for c in reversed(svc.history))
        detail = escape(svc.error or "")
        if svc.failing:
            detail += (" — " if detail else "") + "failing: " + escape(", ".join(svc.failing))
        rows.append(
            "<tr>"
            f"<td>{escape(svc.name)}{' <small>(optional)</small>' if svc.optional else ''}</td>"
            f"<td>{_badge(svc.status)}</td>"
            f"<td style='text-align:right'>{'—' if svc.latency_ms is None else f'{svc.latency_ms:.0f} ms'}</td>"
            f"<td>{_when(svc.last_change)}</td><td>{_when(svc.last_checked)}</td>"
            f"<td>{strip}</td><td>{detail}</td></tr>")
    checked = _when(report.checked_at)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh_sec}">
<title>tutorstack status: {escape(report.status)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #d0d7de;padding:6px 12px;text-align:left;vertical-align:middle}}</style></head>
<body><h1>tutorstack {_badge(report.status)}</h1>
<p>Checked every {report.interval_sec:g}s; last round {checked}. Page generated {now} UTC, refreshes every {refresh_sec}s.</p>
<table><thead><tr><th>service</th><th>status</th><th>latency</th><th>last change</th><th>last checked</th>
<th>recent checks (oldest → newest)</th><th>detail</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table></body></html>
"""
