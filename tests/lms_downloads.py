"""Bulk downloads as the LMSs write them, built from their documented layouts (see autograder/lms.py).

Each builder writes a zip of the given notebooks (bytes) and returns its path:

* Canvas "Download Submissions": flat, ``<lastnamefirstname>[_LATE]_<user id>_<file id>_<file name>``;
* Moodle "Download all submissions": ``<Full Name>_<participant id>_assignsubmission_file_/<file>``,
  or flat ``<Full Name>_<participant id>_assignsubmission_file_<file>``;
* Gradescope "Export Submissions": ``assignment_<id>_export/submission_<id>/<file>`` and
  ``assignment_<id>_export/submission_metadata.yml``;
* Blackboard "Assignment File Download": ``<Assignment>_<username>_attempt_<YYYY-MM-DD-HH-MM-SS>_<file>``
  and the attempt's ``.txt`` receipt.
"""
import zipfile


def canvas(path, rows):
    """rows: (name, user_id, file_id, file_name, data, late)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, uid, fid, file, data, late in rows:
            zf.writestr(f"{name}{'_LATE' if late else ''}_{uid}_{fid}_{file}", data)
    return path


def moodle(path, rows, folders=True):
    """rows: (full name, participant id, file name, data)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, pid, file, data in rows:
            prefix = f"{name}_{pid}_assignsubmission_file_"
            zf.writestr(f"{prefix}/{file}" if folders else f"{prefix}{file}", data)
    return path


def gradescope(path, rows, assignment_id=424242):
    """rows: (submission id, name, sid, email, created_at, file name, data)."""
    top = f"assignment_{assignment_id}_export"
    meta = []
    with zipfile.ZipFile(path, "w") as zf:
        seen = set()
        for sub, name, sid, email, created, file, data in rows:
            zf.writestr(f"{top}/submission_{sub}/{file}", data)
            if sub in seen:
                continue
            seen.add(sub)
            meta.append(f"submission_{sub}:\n"
                        f"  :submitters:\n"
                        f"  - :name: {name}\n"
                        f"    :sid: '{sid}'\n"
                        f"    :email: {email}\n"
                        f"  :created_at: {created}\n"
                        f"  :score: 0.0\n")
        zf.writestr(f"{top}/submission_metadata.yml", "---\n" + "".join(meta))
    return path


def blackboard(path, rows, title="Homework 3"):
    """rows: (username, full name, YYYY-MM-DD-HH-MM-SS, file name, data)."""
    with zipfile.ZipFile(path, "w") as zf:
        for user, name, stamp, file, data in rows:
            base = f"{title}_{user}_attempt_{stamp}"
            zf.writestr(f"{base}_{file}", data)
            zf.writestr(f"{base}.txt", f"Name: {name} ({user})\nAssignment: {title}\n"
                                       f"Date Submitted: {stamp}\nCurrent Grade: Needs Grading\n\n"
                                       f"Submission Field:\nThere is no student submission text data for this "
                                       f"assignment.\n\nComments:\nThere are no student comments for this "
                                       f"assignment.\n\nFiles:\n\tOriginal filename: {file}\n"
                                       f"\tFilename: {base}_{file}\n")
    return path


# --------------------------------------------------------------------------- what learners add to a download
# A learner names the files they upload (Canvas and Blackboard keep that name after their own
# prefix), the folders inside their submission (Moodle, Gradescope), and what a zip they upload
# holds.  These helpers put such uploads into a download built above, unpack a download as an
# instructor does before collecting a folder, and damage a member as a bad transfer does.

def add(path, members):
    """Add {name inside the download: bytes or str} to the zip at path, as the LMS stores uploads."""
    with zipfile.ZipFile(path, "a") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def zip_bytes(members):
    """A learner's own zip upload holding {name: bytes or str}."""
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def unzip(path, folder):
    """The download unpacked into folder (what 'collect FOLDER' reads); returns folder."""
    with zipfile.ZipFile(path) as zf:
        zf.extractall(folder)
    return folder


def break_crc(path, name):
    """Flip one stored byte of member name (written uncompressed), so that reading it fails its CRC-32."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
        data = zf.read(name)
    assert info.compress_type == zipfile.ZIP_STORED and data
    raw = bytearray(open(path, "rb").read())
    header = raw.index(name.encode(), info.header_offset) + len(name.encode()) + len(info.extra)
    raw[header] ^= 0xFF
    with open(path, "wb") as fh:
        fh.write(bytes(raw))
    return path


def yaml_alias_bomb(levels, width=10):
    """(YAML lines defining anchors a0..a<levels-1>, the alias of the last): a few hundred bytes
    whose last alias stands for width**levels strings (a 'billion laughs')."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n", f"*a{levels - 1}"
