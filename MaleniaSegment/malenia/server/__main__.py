import sys

from malenia.cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
