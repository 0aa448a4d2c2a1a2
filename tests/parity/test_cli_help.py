"""``--help`` of every command lists every flag, each with its default.

Run in process: ``main(["--help"])`` either raises ``SystemExit(0)`` or returns 0, and the text
goes to stdout (captured). For every optional argument of the command's parser, each spelling
appears in the help text, and the argument's own help appears there too (compared without
whitespace, as argparse wraps lines). That help states the default; the exceptions are required
flags (no default) and the ``--no-X`` half of a pair of switches whose ``--X`` states it.
"""

from __future__ import annotations

import importlib

import pytest

COMMANDS = [
    # (module, parser factory, argv prefix for main)
    ("ptycho.simulate", "build_parser", []),
    ("ptycho.train", "build_parser", []),
    ("ptycho.inference", "build_parser", []),
    ("ptycho_torch.train", "build_parser", []),
    ("ptycho_torch.inference", "build_parser", []),
    ("ptycho.cli", "build_train_parser", ["train"]),
    ("ptycho.cli", "build_infer_parser", ["infer"]),
    ("ptycho.convert", "build_parser", []),
    ("ptycho.evaluate", "build_parser", []),
]


def squash(text: str) -> str:
    return "".join(text.split())


def run_help(module, prefix, capsys) -> str:
    try:
        code = module.main([*prefix, "--help"])
    except SystemExit as exc:
        code = exc.code
    assert code in (0, None), f"{module.__name__} --help exited with {code}"
    return capsys.readouterr().out


@pytest.mark.parametrize("module_name,factory,prefix", COMMANDS,
                         ids=[f"{m}:{f}" for m, f, _ in COMMANDS])
def test_help_lists_every_flag_with_default(module_name, factory, prefix, capsys):
    module = importlib.import_module(module_name)
    parser = getattr(module, factory)()
    out = run_help(module, prefix, capsys)
    flat = squash(out)
    formatter = parser._get_formatter()
    optionals = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert optionals, f"{module_name}: no optional flags found"
    for action in optionals:
        for flag in action.option_strings:
            assert flag in out, f"{module_name}: {flag} missing from --help"
        assert action.help, f"{module_name}: {action.option_strings[0]} has no help text"
        text = formatter._expand_help(action)
        assert squash(text) in flat, f"{module_name}: help of {action.option_strings[0]} not shown"
        # A required flag has no default; a --no-X switch shares its default with --X.
        partners = [formatter._expand_help(b) for b in optionals
                    if b is not action and b.dest == action.dest and b.help]
        stated = [t for t in [text, *partners] if "default" in t.lower()]
        assert stated or action.required, \
            f"{module_name}: help of {action.option_strings[0]} does not state its default: {text!r}"


@pytest.mark.parametrize("factory", ["build_train_parser", "build_infer_parser"])
def test_unified_parsers_accept_both_spellings(factory):
    from ptycho import cli

    parser = getattr(cli, factory)()
    a = parser.parse_args(["--batch_size", "5", "--log_patch_stats", "--backend", "tf"])
    b = parser.parse_args(["--batch-size", "5", "--log-patch-stats", "--backend", "tf"])
    assert vars(a) == vars(b) and a.batch_size == 5 and a.log_patch_stats is True


def test_unified_cli_main_help(capsys):
    from ptycho import cli

    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "infer" in out
    assert cli.main(["bogus"]) == 2
