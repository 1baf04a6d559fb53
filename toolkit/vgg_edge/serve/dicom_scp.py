"""The DICOM front door: a Storage SCP (pynetdicom) that modalities and PACS push images to.

It accepts every storage SOP class in every transfer syntax pynetdicom knows (compressed ones
included: decoding happens later, in the engine, through the same reader as training), and
C-ECHO. A calling AE title not on the allow-list is refused at association. For each C-STORE:

- no room in the engine's queue: status 0xA700 (out of resources), nothing written;
- otherwise the received object is written as a DICOM file and fsync'ed into the spool
  (`Spool.put`), queued, and only then is success (0x0000) returned: an acknowledged image
  survives a crash and is classified after a restart.
"""

from __future__ import annotations

from collections.abc import Sequence

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from ..errors import VggEdgeError
from .engine import Engine, Job, Overloaded
from .spool import Spool

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


def start_scp(engine: Engine, spool: Spool, host: str, port: int, ae_title: str, allowed: Sequence[str] = (), max_associations: int = 32):
    """Start the SCP in its own threads; returns pynetdicom's server (call `.shutdown()` to stop it)."""
    ae = AE(ae_title=ae_title)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.maximum_associations = max_associations
    if allowed:
        ae.require_calling_aet = list(allowed)

    def on_store(event) -> int:
        if not engine.has_room():
            engine.refused.labels("dicom").inc()
            return OUT_OF_RESOURCES
        try:
            data = event.encoded_dataset()  # preamble, file meta and the dataset as received: no re-encoding
        except Exception:
            return CANNOT_UNDERSTAND
        spooled = spool.put(data, ".dcm", "dicom")
        meta = {"sop_instance_uid": str(event.request.AffectedSOPInstanceUID), "calling_ae": event.assoc.requestor.ae_title}
        try:
            engine.submit(Job(spooled, meta))
        except Overloaded:  # filled up since the check: the spooled copy is classified anyway, after the queue drains
            engine.submit(Job(spooled, meta), block=True)
        engine.received.labels("dicom").inc()
        return SUCCESS

    handlers = [(evt.EVT_C_STORE, on_store), (evt.EVT_C_ECHO, lambda event: SUCCESS)]
    try:
        return ae.start_server((host, port), block=False, evt_handlers=handlers)
    except OSError as exc:
        raise VggEdgeError(f"--dicom-port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); pick a free port") from None
