"""Self-supervised pretraining: an encoder learnt from images without labels (``medclass pretrain``).

* :mod:`~medclass.ssl.losses`: NT-Xent (SimCLR), BYOL's regression loss, masked reconstruction;
* :mod:`~medclass.ssl.pretext`: the pretext tasks' batches: quarter turns, shuffled slabs, masks;
* :mod:`~medclass.ssl.methods`: one module per method around any registered encoder;
* :mod:`~medclass.ssl.pretrain`: the explicit training loop, checkpoints and the encoder's run folder;
* :mod:`~medclass.ssl.probe`: a frozen encoder measured on labels (linear and k-NN probes).
"""
