"""The ``llmoffload`` command line: the app, its one error rule, and every command group
registered (each group's commands are plain functions in a module of this package).

Bad input of any kind ends in one line ``error: <message>`` on stderr and exit
code 2, never a traceback, and leaves no output file behind: inputs are
validated before anything is written, and every file is written atomically.
"""

from __future__ import annotations

import errno
from importlib import metadata
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from llmoffload.cli import reproduce, runtime, scenario, schedule, train
from llmoffload.errors import OffloadError, extra_of, needs

if TYPE_CHECKING:  # Typer vendors click: its commands take this Context
    from typer._click.core import Context

EXIT_BAD_INPUT = 2  # the same code Typer uses for usage errors


class PlainGroup(TyperGroup):
    """Lists each command beside its help's whole first paragraph, wrapped: click's default
    cuts it at the first full stop ("Reproduce the paper's Figs.") or at the line's end."""

    def format_commands(self, ctx: Context, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, " ".join((command.help or "").split("\n\n")[0].split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class ReportingGroup(PlainGroup):
    """Turns OffloadError, OSError, a bad option value (out of its range, missing) and a
    missing extra from any subcommand into one line on stderr, exit 2, instead of click's
    usage text or a traceback.

    Catching here, rather than in ``main``, makes in-process runs (tests,
    ``CliRunner``) behave exactly like the installed command.
    """

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except typer.BadParameter as exc:
            message = exc.format_message()
        except OffloadError as exc:
            message = str(exc)
        except ModuleNotFoundError as exc:  # a command that does not check its extra first
            extra = extra_of(exc)
            if extra is None:
                raise
            message = str(needs(extra, ctx.invoked_subcommand or "this command"))
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # a closed pipe: let Typer exit quietly
                raise
            message = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        typer.echo(f"error: {' '.join(message.split())}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)


def group(help: str, **extra: Any) -> typer.Typer:
    """A command group whose help is click's plain text: Rich's boxes wrap every option's
    help into a narrow column at 80 columns."""
    extra.setdefault("cls", PlainGroup)
    return typer.Typer(
        help=help, no_args_is_help=True, add_completion=False, rich_markup_mode=None, **extra
    )


app = group(
    "Fine-grained LLM inference offloading across edge servers and a cloud.",
    cls=ReportingGroup,
    pretty_exceptions_enable=False,
)
scenario_app = group("Inspect and check scenario files.")
app.add_typer(scenario_app, name="scenario")


def main() -> None:
    """Entry point of the ``llmoffload`` script."""
    app()


def print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"llmoffload {metadata.version('llmoffload')}")
        raise typer.Exit()


@app.callback()
def options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """The options before any command (the group's help is the app's)."""


app.command("instance")(scenario.instance_cmd)
scenario_app.command("show")(scenario.scenario_show)
scenario_app.command("validate")(scenario.scenario_validate)
app.command("schedule")(schedule.schedule_cmd)
app.command("train", cls=train.LearnerHelp)(train.train_cmd)
app.command("evaluate")(train.evaluate_cmd)
app.command("reproduce")(reproduce.reproduce_cmd)

# The runtime on real endpoints (the [runtime] extra): see docs/runtime.md.
app.command("run")(runtime.run_cmd)
app.command("calibrate")(runtime.calibrate_cmd)
app.command("serve")(runtime.serve_cmd)
deployment_app = group("Check deployment files.")
deployment_app.command("validate")(runtime.deployment_validate_cmd)
app.add_typer(deployment_app, name="deployment")
endpoints_app = group("Local llama.cpp servers for a deployment (needs the local extra).")
endpoints_app.command("up")(runtime.endpoints_up_cmd)
app.add_typer(endpoints_app, name="endpoints")
