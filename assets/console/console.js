// stowage console: uploads with per-file progress (drag and drop or the file input), then a
// refresh of the listing. No inline scripts: the CSP allows only this file.
"use strict";
(function () {
  const box = document.getElementById("upload");
  if (!box) return;
  const org = box.dataset.org, base = box.dataset.path, csrf = box.dataset.csrf;
  const input = document.getElementById("files");
  const sub = document.getElementById("subfolder");
  const list = document.getElementById("progress");

  function folder() {
    const extra = (sub.value || "").trim().replace(/^\/+|\/+$/g, "");
    const parts = [base, extra].filter(function (p) { return p.length > 0; });
    return parts.length ? parts.join("/") + "/" : "";
  }

  function uploadOne(file, into) {
    return new Promise(function (resolve) {
      const item = document.createElement("li");
      const label = document.createElement("span");
      label.textContent = file.name + " ";
      const bar = document.createElement("progress");
      bar.max = file.size || 1; bar.value = 0;
      const status = document.createElement("span");
      status.className = "status";
      item.append(label, bar, status);
      list.append(item);
      const xhr = new XMLHttpRequest();
      const key = into + file.name;
      xhr.open("PUT", "/console/o/" + encodeURIComponent(org) + "/upload?key=" + encodeURIComponent(key));
      xhr.setRequestHeader("X-CSRF-Token", csrf);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.upload.onprogress = function (e) {
        if (e.lengthComputable) { bar.max = e.total; bar.value = e.loaded; }
        status.textContent = " " + Math.round(100 * e.loaded / (e.total || 1)) + "%";
      };
      xhr.onload = function () {
        let answer = {};
        try { answer = JSON.parse(xhr.responseText); } catch (e) { answer = {}; }
        if (xhr.status === 200 && answer.success) {
          bar.value = bar.max; item.className = "done"; status.textContent = " uploaded";
        } else {
          item.className = "failed";
          status.textContent = " refused: " + (answer.error || ("the server answered " + xhr.status));
        }
        resolve();
      };
      xhr.onerror = function () {
        item.className = "failed";
        status.textContent = " failed: the connection to the server broke; try again";
        resolve();
      };
      xhr.send(file);
    });
  }

  async function refresh() {
    const answer = await fetch(window.location.href, { credentials: "same-origin" });
    if (!answer.ok) return;
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    for (const id of ["listing"]) {
      const fresh = page.getElementById(id), old = document.getElementById(id);
      if (fresh && old) old.replaceWith(fresh);
    }
    const usage = page.querySelector(".usage"), oldUsage = document.querySelector(".usage");
    if (usage && oldUsage) oldUsage.replaceWith(usage);
  }

  async function uploadAll(files) {
    const into = folder();
    await Promise.all(Array.from(files).map(function (f) { return uploadOne(f, into); }));
    await refresh();
  }

  input.addEventListener("change", function () { if (input.files.length) uploadAll(input.files); });
  box.addEventListener("dragover", function (e) { e.preventDefault(); box.classList.add("dragging"); });
  box.addEventListener("dragleave", function () { box.classList.remove("dragging"); });
  box.addEventListener("drop", function (e) {
    e.preventDefault(); box.classList.remove("dragging");
    if (e.dataTransfer && e.dataTransfer.files.length) uploadAll(e.dataTransfer.files);
  });
})();
