import sys

from keras_sanet.cli import main

sys.exit(main())
