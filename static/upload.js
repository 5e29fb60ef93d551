// Data uploads with a progress bar: the form is sent with XHR (upload progress events), the
// CSRF token in a header so the server can stream the body straight to disk.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!form.matches("form[data-upload]")) { return; }
  event.preventDefault();
  var bar = form.querySelector("progress"), text = form.querySelector(".progress-text");
  var error = form.querySelector(".error"), button = form.querySelector("button");
  var xhr = new XMLHttpRequest();
  xhr.open("POST", form.dataset.upload);
  var meta = document.querySelector('meta[name="csrf-token"]');
  if (meta) { xhr.setRequestHeader("X-CSRFToken", meta.content); }
  xhr.upload.addEventListener("progress", function (e) {
    if (!e.lengthComputable) { return; }
    var percent = Math.floor(100 * e.loaded / e.total);
    bar.value = percent;
    text.textContent = percent + "% (" + (e.loaded / 1048576).toFixed(1) + " of " + (e.total / 1048576).toFixed(1) + " MB)";
  });
  xhr.addEventListener("load", function () {
    var body = {};
    try { body = JSON.parse(xhr.responseText); } catch (ignored) { body = {}; }
    if (xhr.status === 201 && body.url) { window.location = body.url; return; }
    error.textContent = (body.error && body.error.message) || ("upload failed (" + xhr.status + ")");
    error.hidden = false; button.disabled = false;
  });
  xhr.addEventListener("error", function () {
    error.textContent = "the upload was interrupted"; error.hidden = false; button.disabled = false;
  });
  error.hidden = true; bar.hidden = false; bar.value = 0; button.disabled = true;
  xhr.send(new FormData(form));
});
