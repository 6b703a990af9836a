"""The seed's task-status shape (Celery-style states and "Processing page 2 of 5") from the job JSON."""
from __future__ import annotations


def progress_status(done: int, total: int) -> dict:
    """Custom status while pages finish: the seed's message names the page being worked on."""
    if done >= total:
        return {"current": total, "total": total, "message": f"Processed {total} of {total} pages"}
    return {"current": done, "total": total, "message": f"Processing page {done + 1} of {total}"}


def task_status(job: dict) -> dict:
    result = job.get("result") or {}
    failed_pages = result.get("failed_pages") or []
    state = {"accepted": "PENDING", "processing": "PROGRESS", "failed": "FAILURE", "canceled": "FAILURE"}.get(
        job["status"], "PARTIAL" if failed_pages else "SUCCESS")
    current, total = job["progress"]["current"], job["progress"]["total"]
    return {"task_id": job["job_id"], "state": state, "status": job["progress"]["message"] or state.title(),
            "current": current, "total": total,
            "progress": 100 if state in ("SUCCESS", "PARTIAL") else (int(100 * current / total) if total else 0),
            "result": job.get("result"), "error": job.get("error"), "failed_pages": failed_pages,
            "usage": job.get("usage"), "created_at": job.get("created_at"), "updated_at": job.get("updated_at"),
            **({"callback": job["callback"]} if job.get("callback") else {})}
