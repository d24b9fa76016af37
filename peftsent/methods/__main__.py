"""``python -m peftsent.methods``: print the method x architecture capability table (Markdown)."""

from peftsent.cli import make_parser
from peftsent.methods import capability_table


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(
        "python -m peftsent.methods",
        "Print which fine-tuning method works with which architecture, as a Markdown table.",
        "examples:\n  python -m peftsent.methods > methods.md\n",
    )
    parser.parse_args(argv)
    print(capability_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
