"""`edgecnn report RUN`: RUN/report.html, one self-contained page with everything the run produced.

    edgecnn report runs/d            # then open runs/d/report.html in a browser
"""
from __future__ import annotations

import click

from edgecnn.cli.common import user_errors


@click.command(short_help="Write RUN/report.html: data, training, export, bench and boards on one page.")
@click.argument("run_dir", type=click.Path(file_okay=False))
@user_errors
def report(run_dir):
    """Write RUN_DIR/report.html: data and model, training curves, confusion matrix, classification report,
    the export table and quantization recipe, the bench table and plots, board rows and the manifest, in one
    self-contained page (images inline, no network). train, export and bench refresh it as they write."""
    from edgecnn.report import write_report

    click.echo(f"wrote {write_report(run_dir)}")
