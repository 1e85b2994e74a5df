"""Text on keyframes (docs/place_text.md): what OCR read and what people called a place
(``place_text``), labels from YAML, text queries, the text rule of verification and the background
OCR worker. Imports only the core spine; knows nothing of the map store or the detector.
"""
