"""The one error the collection rules raise for a request they refuse."""


class CollectionError(Exception):
    """A request a contractor made that the rules refuse; the message says why, and `field`
    names the form field it is about (None: the request as a whole).

    The actions of `collection` (conversations, generation, judgements, campaigns, gold items)
    check ownership and state themselves, so a caller cannot skip a rule; errors a contractor
    can fix are these, with a message meant for them.
    """

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field
