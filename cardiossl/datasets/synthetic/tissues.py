"""Tissue classes of the version-2 anatomy and the segmentation label of each.

Labels follow the ACDC / UK Biobank protocols (Bernard et al., IEEE TMI 2018; Petersen et al., JCMR
2016): papillary muscles and trabeculae inside the LV cavity are labelled LV cavity; the RV outflow
tract below the pulmonary valve is RV cavity; atria, aorta and the RV free wall are background.
"""

from __future__ import annotations

import numpy as np

(
    AIR,
    SUBCUT_FAT,
    MUSCLE,  # skeletal: chest wall, paraspinal, arms
    BONE,  # cortical bone: ribs, vertebral rim (dark)
    MARROW,  # vertebral body and rib marrow
    CSF,  # spinal canal (bright in bSSFP)
    LUNG,
    LIVER,
    STOMACH,
    MEDIASTINUM,  # mediastinal soft tissue
    PERICARDIAL_FAT,  # fat in the pericardial space and the atrioventricular grooves
    VESSEL,  # descending aorta, IVC, pulmonary trunk: flowing blood
    HEART_WALL,  # RV free wall, atrial and vessel walls: myocardium-like, label background
    RV_CAV,
    RV_TRAB,  # RV trabeculae and moderator band: myocardium-like, label RV cavity
    LV_MYO,
    LV_CAV,
    LV_PAP,  # papillary muscles: myocardium-like, label LV cavity
    LV_TRAB,  # LV trabeculae: myocardium-like, label LV cavity
    ATRIUM,
    AORTA,  # aortic root and ascending aorta
) = range(21)
N_CLASSES = 21
NAMES = (
    "air", "subcutaneous_fat", "muscle", "bone", "marrow", "csf", "lung", "liver", "stomach", "mediastinum",
    "pericardial_fat", "vessel", "heart_wall", "rv_cavity", "rv_trabeculae", "lv_myocardium", "lv_cavity",
    "lv_papillary", "lv_trabeculae", "atrium", "aorta",
)
NOT_HEART = 255
CLASS_TO_LABEL = np.zeros(256, dtype=np.uint8)
CLASS_TO_LABEL[[LV_CAV, LV_PAP, LV_TRAB]] = 1
CLASS_TO_LABEL[LV_MYO] = 2
CLASS_TO_LABEL[[RV_CAV, RV_TRAB]] = 3
BLOOD = (RV_CAV, LV_CAV, ATRIUM, AORTA, VESSEL)
"""Flowing blood: the source of flow ghosts and flow voids."""
