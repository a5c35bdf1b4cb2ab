// segloop viewer: open an existing mask onto the job, delete a job (issue 15).
//
// "Open mask…" sends a NIfTI label map (canonical or uploaded grid) or a DICOM-SEG to
// PUT /api/v1/jobs/{id}/mask: it becomes a new version (Undo goes back). Each job in
// "Earlier jobs" gets a delete button (DELETE /api/v1/jobs/{id}, after a confirmation).
// viewer.js calls the hooks of the object returned by createWorkfiles(ctx).

const $ = (sel) => document.querySelector(sel);

export function createWorkfiles(ctx) {
  const { S, api } = ctx;

  function build() {
    const bar = $('#btn-review').parentElement;
    const label = document.createElement('label');
    label.className = 'link small';
    label.id = 'open-mask';
    label.title = 'Open a label map onto this job (NIfTI on its grid, or a DICOM-SEG of this series): a new version';
    label.textContent = 'Open mask…';
    const input = document.createElement('input');
    input.type = 'file';
    input.id = 'mask-input';
    input.accept = '.nii,.gz,.nii.gz,.dcm';
    label.appendChild(input);
    bar.appendChild(label);
    input.addEventListener('change', (e) => {
      const f = e.target.files && e.target.files[0];
      e.target.value = '';
      if (f) openMask(f).catch(ctx.fail);
    });
  }

  async function openMask(file) {
    if (!S.job) throw new Error('Open a volume first: the mask goes onto its job.');
    if (S.dirty && !window.confirm('Opening a mask replaces your unsaved brush edits. Go on?')) return;
    ctx.setState('busy', 'opening mask');
    let out;
    try {
      const resp = await api.request('PUT', api.jobUrl(S.job.job_id, '/mask'), {
        body: await file.arrayBuffer(), headers: { 'Content-Type': 'application/octet-stream' },
      });
      out = await resp.json();
    } catch (e) {
      ctx.setState('error', 'rejected');
      throw new Error(`${file.name}: ${e.message}`);
    }
    await ctx.refreshObjects();
    await ctx.loadVersion(out.version);
    await ctx.refreshVersions();
    ctx.setState('idle');
    ctx.message(`${file.name} opened as version ${out.version}`, 'ok');
  }

  /** A delete button on one row of the Earlier jobs list. */
  function decorateJob(li, j) {
    const b = document.createElement('button');
    b.className = 'tiny ghost job-delete';
    b.textContent = '✕';
    b.title = 'Delete this job, its masks and its uploaded files';
    b.addEventListener('click', (e) => {
      e.stopPropagation();
      deleteJob(j).catch(ctx.fail);
    });
    li.appendChild(b);
  }

  async function deleteJob(j) {
    const name = j.filename || j.job_id.slice(0, 8);
    if (!window.confirm(`Delete “${name}” with all its mask versions? This cannot be undone.`)) return;
    await api.request('DELETE', api.jobUrl(j.job_id));
    if (S.job && S.job.job_id === j.job_id) ctx.closeJob();
    await ctx.refreshJobs();
    ctx.message(`Deleted ${name}`, 'ok');
  }

  return { build, decorateJob, openMask };
}
