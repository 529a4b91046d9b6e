"""Exceptions raised by candlelake. Each names the bad value and what was expected."""


class CandlelakeError(Exception):
    """Base class for every error candlelake raises on purpose."""


class InvalidRequestError(CandlelakeError, ValueError):
    """The caller asked for something that cannot be served (bad dates, bad parameters)."""


class UnknownSymbolError(InvalidRequestError):
    """The symbol is not listed by the exchange (or not trading)."""


class UnsupportedIntervalError(InvalidRequestError):
    """The kline interval is not one candlelake (or the exchange) supports."""


class SourceDataError(CandlelakeError):
    """Data received from a source is malformed: bad CSV row, truncated archive, bad JSON."""


class ChecksumMismatchError(SourceDataError):
    """A downloaded archive does not match its published sha256 checksum."""


class DataCheckError(SourceDataError):
    """Rows from a source fail a data check (``core.checks``); they were not landed."""


class ShrinkRefusedError(CandlelakeError):
    """A landing would replace a landed day with fewer rows; refused unless asked to replace."""


class BinanceAPIError(CandlelakeError):
    """Binance answered with an error that retrying will not fix."""


class BinanceIPBannedError(BinanceAPIError):
    """HTTP 418: the IP is banned for ignoring 429 responses; we stop instead of retrying."""


class LakeWriteError(CandlelakeError):
    """A partition could not be written; the previous version of the partition is untouched."""


class SourceCapabilityError(InvalidRequestError):
    """The configured source cannot provide this kind of data (e.g. trades from freqtrade)."""


class RunFailedError(CandlelakeError):
    """A Dagster run of a build failed; the message names the run, the range and the step error."""


class CorruptPartitionError(CandlelakeError):
    """Lake files whose bytes differ from the hash recorded when they were written."""

    def __init__(self, message: str, paths: list | tuple = ()) -> None:
        super().__init__(message)
        self.paths = list(paths)

    def __reduce__(self):  # pickled across processes with its paths, not only its message
        return type(self), (str(self), self.paths)
