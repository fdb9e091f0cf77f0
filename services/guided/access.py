"""Who may do what with a learner's data. Pure functions of the caller and the course's teachers.

- admin: everything.
- a student (or any key with a user_id): their own profile and sessions, in every course.
- a teacher: the profiles of every learner in a course whose teacher list names the teacher's user_id
  (guided:course:{course_id}:teachers, from GUIDED_COURSES_FILE or PUT /v1/courses/{id}/teachers);
  only teachers of the course (and admins) may correct a profile (PATCH).
- a key without a user_id that is not admin: nothing (403)."""

from __future__ import annotations

from common.auth import Caller


def is_teacher_of(caller: Caller, teachers: set[str]) -> bool:
    return caller.role == "teacher" and bool(caller.user_id) and caller.user_id in teachers


def can_read_profile(caller: Caller, user_id: str, teachers: set[str]) -> bool:
    if caller.role == "admin":
        return True
    if caller.user_id and caller.user_id == user_id:
        return True
    return is_teacher_of(caller, teachers)


def can_run_session(caller: Caller, user_id: str, teachers: set[str]) -> bool:
    """A session writes the learner's profile: the learner themself, their course's teacher, an admin."""
    return can_read_profile(caller, user_id, teachers)


def can_correct_profile(caller: Caller, teachers: set[str]) -> bool:
    return caller.role == "admin" or is_teacher_of(caller, teachers)
