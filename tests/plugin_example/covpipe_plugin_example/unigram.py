"""The torch half of the `unigram` model class (imported when a model is built)."""

from covpipe.models.tables import Ngram

from . import UnigramSpec


class Unigram(UnigramSpec, Ngram):
    pass
