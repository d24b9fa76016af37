"""``python -m peftsent.methods``: print the method x architecture capability table (Markdown)."""

from peftsent.methods import capability_table

if __name__ == "__main__":
    print(capability_table())
