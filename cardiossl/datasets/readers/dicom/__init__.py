"""DICOM exam folders: one folder per subject, any nesting, views decided from plane geometry.

This room holds the header reader (``headers``), pixel decoding (``pixels``), the geometric view
decision (``views``) and the registered ``DicomReader`` (``reader``); it imports only from
``cardiossl.datasets`` (geometry, records, readers.base).

Reading an exam
---------------
Every file below the subject folder that carries the ``DICM`` preamble (or ends in ``.dcm``/``.ima``)
is read. Images are grouped into series by SeriesInstanceUID, and a series is split into *plane
groups*, one per distinct plane (orientation and position), so a series that mixes planes (a whole
SA stack in one series, a localizer with three orthogonal planes) still yields one group per slice.
The images of one group are its cine frames, ordered by TriggerTime, then InstanceNumber. Single-phase
groups in an exam that has cine groups are localizers/scouts and are skipped with a note, as are
non-image objects (DICOMDIR, structured reports, secondary captures). A group that is neither parallel
to the SA stack nor roughly perpendicular to it is skipped with a note. Planes come straight from the
headers (``Plane.from_dicom``: PixelSpacing is (row spacing, column spacing)); pixels are the stored
values through RescaleSlope/RescaleIntercept, as float32.

Deciding the views (geometry first; SeriesDescription only as a hint)
---------------------------------------------------------------------
1. **SA stack**: plane groups are clustered by orientation (normals within 10 degrees); the SA stack is
   the cluster with the most spatially distinct positions along its normal (ties: the one whose
   descriptions say SA, then the one with more planes perpendicular to it). Two groups at the same
   position keep the later series (a re-acquisition) and note the other.
2. **Long-axis candidates**: groups whose normal is within 40 degrees of perpendicular to the SA normal.
3. **LV long axis**: every pair of candidates at least 20 degrees apart defines a line (their
   intersection); a candidate agrees with that line when the line, where it meets the first and the
   last SA slice, lies within 15 mm of the candidate's plane. The line with most agreeing candidates
   wins (fewest millimetres of disagreement next). The agreeing candidates are the *LV planes*
   (2ch/3ch/4ch all contain the LV long axis); the LV centre in each SA slice is the least-squares
   crossing of their traces there (``meta["lv_centres"]``).
4. **Which LV plane is which**, from the traces' line angles in the middle SA slice, measured in
   anatomical in-plane directions: 0 = lateral, 90 = *anterior* (patient -y in LPS projected into the
   SA plane), 180 = *septal* (patient right, -x, projected and made orthogonal to anterior). The
   standard planes cut an SA slice about 60 degrees apart, in a fixed cyclic order: the **4ch** runs
   through the RV (near the septal direction), the **3ch** (through the LV outflow tract and aortic
   root, anterior to the mitral valve) is the 4ch turned 60 degrees towards anterior, the **2ch** the
   4ch turned 60 degrees the other way (this holds for the AHA segment model, Cerqueira et al.,
   Circulation 2002, where the planes cut segments 3/6, 2/5 and 1/4, and for bivme-patient1). The
   reader fits this pattern (``assign_lv_views``): it picks the 4ch angle phi and gives each LV plane
   a view or none so as to minimise the angular misfit plus the distance of phi from the septal
   direction, with 45 degrees for a plane left without a view and 15 degrees off for every view the
   description names (``4CH``, ``2CH``, ``3CH``/``LVOT``), so descriptions decide only near-ties.
   Because the pattern is fitted as a whole, any two or three LV planes resolve while the 4ch trace
   lies within about 25 degrees of the septal direction (bivme-patient1: 18); at 30 degrees (the
   AHA idealisation, 4ch through the inferoseptum) 4ch and 3ch tie and descriptions decide; beyond
   that the views rotate by one place. A further LV plane within 10 degrees of an assigned one repeats that view
   (``slice_index`` 1, 2, ...); any other is ``la``.
5. **Other long-axis planes** (not containing the LV axis): ``rvot`` when the trace passes on the
   septal (RV) side of the LV centre and the description does not name an LV view; ``la`` otherwise
   (e.g. a plane described as 2CH that misses the LV axis by centimetres is an RV two-chamber view,
   not a 2ch). With fewer than two long-axis candidates there is no LV axis, and a candidate takes
   its view from its description, or ``la``.
6. **Base to apex** (``cardiossl.datasets.stack_order``, the rule every reader shares): the LV long
   axis is the common line of the LV planes found in step 3 (with none, the stack normal); it points
   from base to apex towards the patient's left, anterior and inferior, (+1, -1, -1)/sqrt(3) in LPS
   (the LA planes fix the axis but not its sign), and the SA slices are ordered along it so that
   slice 0 is basal. ``stack_position`` is the distance from the basal slice over the stack length
   (0 base .. 1 apex; 0.5 for a single slice). Labels play no part.

Limits: the septal/anterior directions and the apex direction are anatomical priors in patient
coordinates; they fail for dextrocardia or congenital hearts with unusual orientation (the order is
flagged ``uncertain`` in ``meta["sa_order"]`` when the long axis is more than 72 degrees from the
apex direction) and become less reliable when the heart is rotated by tens of degrees about its
long axis, where a view-naming description decides only near-ties. Exams whose series have different
FrameOfReferenceUIDs are read as one coordinate system (with a warning), since anonymisers often
rewrite the UID per image. Enhanced (multi-frame) MR objects are read frame by frame from their
functional groups (plane position/orientation, pixel measures, trigger delay, rescale).

End-diastole is taken to be the first frame of each cine (smallest TriggerTime, the R wave) and is
marked ``phase="ed"``; end-systole is left unknown (``meta["es_frame"] = None``).
"""


from .headers import (
    ANTERIOR_LPS,
    APEX_DIRECTION_LPS,
    DICOM_SUFFIXES,
    SEPTAL_LPS,
    DicomImage,
    description_hint,
    dicom_files,
    is_dicom_file,
    iter_dicom_files,
    quiet_pydicom,
    read_header,
)
from .pixels import missing_decoder, read_pixels
from .reader import DicomReader, build_exam, read_exam, sanitize_subject_id, scan_exam
from .views import (
    AXIS_PAIR_MIN_DEG,
    AXIS_TOL_MM,
    HINT_BONUS_DEG,
    LA_MAX_TILT_DEG,
    MAX_LV_PLANES,
    PARALLEL_DEG,
    REPEAT_DEG,
    SAME_POSITION_MM,
    UNASSIGNED_COST_DEG,
    VIEW_OFFSETS_DEG,
    PlaneGroup,
    ViewDecision,
    assign_lv_views,
    decide_views,
    group_planes,
)

__all__ = [
    "ANTERIOR_LPS", "APEX_DIRECTION_LPS", "AXIS_PAIR_MIN_DEG", "AXIS_TOL_MM", "DICOM_SUFFIXES", "HINT_BONUS_DEG",
    "LA_MAX_TILT_DEG", "MAX_LV_PLANES", "PARALLEL_DEG", "REPEAT_DEG", "SAME_POSITION_MM", "SEPTAL_LPS",
    "UNASSIGNED_COST_DEG", "VIEW_OFFSETS_DEG", "DicomImage", "DicomReader", "PlaneGroup", "ViewDecision",
    "assign_lv_views", "build_exam", "decide_views", "description_hint", "dicom_files", "group_planes",
    "is_dicom_file", "iter_dicom_files", "missing_decoder", "quiet_pydicom", "read_exam", "read_header",
    "read_pixels", "sanitize_subject_id", "scan_exam",
]
