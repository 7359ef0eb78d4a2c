"""Class names and their order: the single source. Imports nothing."""

# FER2013 order: the integer codes of the original fer2013.csv (0 angry ... 6 neutral).
FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# FER+ majority-vote protocol: the 7 FER2013 emotions plus contempt (Barsoum et al., ICMI 2016).
FERPLUS_CLASSES = FER2013_CLASSES + ("contempt",)

# FER+ vote columns (fer2013new.csv order) -> our class names; unknown/NF are not classes.
FERPLUS_VOTE_COLUMNS = {
    "neutral": "neutral",
    "happiness": "happy",
    "surprise": "surprise",
    "sadness": "sad",
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "contempt": "contempt",
    "unknown": None,
    "NF": None,
}

# RAF-DB basic labels 1..7 (EmoLabel/list_patition_label.txt) -> our class names.
RAFDB_LABELS = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}

# Spellings other datasets use for our classes; folder readers apply these before anything else.
COMMON_ALIASES = {
    "anger": "angry",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
}
