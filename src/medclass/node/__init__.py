"""``medclass node``: a DICOM node between a PACS and a trained run.

It answers C-ECHO, takes C-STORE of images into a durable SQLite queue (:mod:`.queue`), classifies each
series when it is complete (:mod:`.classify`, through the public :class:`~medclass.predict.Predictor`),
and stores a Structured Report and a heat-map Secondary Capture in the source study (:mod:`.dicom_results`)
by C-STORE or STOW-RS (:mod:`.pacs`); :mod:`.worklist` ranks the classified studies for triage. The server
is :class:`medclass.node.scp.Node`. pynetdicom and highdicom are imported only when a node runs.
"""
