"""Doctor's printer area: the printer host (OctoPrint, Moonraker) answers with the configured key."""

from __future__ import annotations

from agent.doctor.checks import Check, CheckFunction, DoctorContext, Status


def check_printer_host(context: DoctorContext) -> list[Check]:
    """``printer.url`` answers and accepts the API key (``SKIP`` without a printer)."""
    from agent.printer.check import check_printer

    settings = context.config.printer
    verdict = check_printer(settings, min(context.options.timeout_s, settings.timeout_s))
    required = verdict.level != "SKIP"
    return [Check("printer", Status(verdict.level), verdict.detail, verdict.fix, required, verdict.data)]


CHECKS: list[CheckFunction] = [check_printer_host]
