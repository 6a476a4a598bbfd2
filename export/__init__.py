"""Reviewed VoTT projects out to training formats (COCO, Pascal VOC, YOLO, AutoML CSV, VoTT CSV),
datasets back into VoTT projects, and evaluation of pre-labels against reviewed labels.

``export.dataset`` holds the format-neutral ``LabeledDataset`` every format reads and writes;
``export.metrics.evaluate`` is the public evaluation API (mAP, precision, recall, F1).
"""
