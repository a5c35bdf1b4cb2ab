"""The datastore: the one owner of reviewed cases (masks marked final in the server).

- ``local``: the on-disk layout (``<home>/datastore``) and :class:`Datastore`, whose ``add``
  places a case and appends its manifest rows atomically across threads and processes.
- ``manifest``: reading ``case_id,image,label,label_value,structure,modality[,patient_id]``
  manifests (the datastore's own and any ``segloop eval`` / ``segloop train`` manifest).
- ``lock``: the cross-process file lock behind every write.

Layer: below jobs, train and eval (which import it); above engines, models and io. Must not
import jobs, api, worker, train or eval. Nothing is imported here, so reading a manifest stays
cheap (no numpy).
"""

__all__: list[str] = []
