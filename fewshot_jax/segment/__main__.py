"""``python -m fewshot_jax.segment predict``: masks for a folder of new images."""

import sys

from fewshot_jax.segment.predict import main

if __name__ == '__main__':
    sys.exit(main())
