// nvmlab monitor: refresh the page's tables from its JSON state every second, no reload.
// The server lays each row out (cells as text, links, classes); this script only puts
// them into the columns the table's header names (th[data-key]), as the page template did.
"use strict";
(function () {
  const body = document.body;
  const source = body.dataset.source;
  const pollMs = Number(body.dataset.pollMs) || 1000;
  const updated = document.getElementById("updated");
  if (!source) {
    return;
  }

  function cell(row, key) {
    const td = document.createElement("td");
    td.dataset.key = key;
    td.className = (row.classes && row.classes[key]) || "";
    const title = row.titles && row.titles[key];
    if (title) {
      td.title = title;
    }
    const text = (row.cells && row.cells[key]) || "";
    const href = row.links && row.links[key];
    if (href) {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = text;
      td.appendChild(a);
    } else {
      td.textContent = text;
    }
    return td;
  }

  function fillTable(table, rows) {
    const keys = Array.from(table.querySelectorAll("thead th[data-key]"), (th) => th.dataset.key);
    const tbody = document.createElement("tbody");
    for (const row of rows) {
      const tr = document.createElement("tr");
      tr.dataset.key = row.key;
      for (const key of keys) {
        tr.appendChild(cell(row, key));
      }
      tbody.appendChild(tr);
    }
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.colSpan = keys.length;
      td.textContent = table.dataset.empty || "";
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
    table.replaceChild(tbody, table.tBodies[0]);
  }

  function fillLinks(container, links) {
    const wanted = JSON.stringify(links);
    if (container.dataset.shown === wanted) {
      return;
    }
    container.replaceChildren(...links.map((link) => {
      const a = document.createElement("a");
      a.href = link.href;
      a.textContent = link.text;
      return a;
    }));
    container.dataset.shown = wanted;
  }

  function fillImages(container, images) {
    // rebuilt only when the list changes: an image is not fetched again every second
    const wanted = JSON.stringify(images);
    if (container.dataset.shown === wanted) {
      return;
    }
    container.replaceChildren(...images.map((image) => {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.src = image.src;
      img.alt = image.alt;
      const caption = document.createElement("figcaption");
      caption.textContent = image.alt;
      figure.append(img, caption);
      return figure;
    }));
    container.dataset.shown = wanted;
  }

  function show(state) {
    for (const table of document.querySelectorAll("table[data-rows]")) {
      const rows = state.tables && state.tables[table.dataset.rows];
      if (rows) {
        fillTable(table, rows);
      }
    }
    for (const element of document.querySelectorAll("[data-field]")) {
      const value = state.fields && state.fields[element.dataset.field];
      if (value !== undefined) {
        element.textContent = value;
      }
    }
    for (const element of document.querySelectorAll("[data-links]")) {
      const links = state.links && state.links[element.dataset.links];
      if (links) {
        fillLinks(element, links);
      }
    }
    for (const element of document.querySelectorAll("[data-images]")) {
      const images = state[element.dataset.images];
      if (images) {
        fillImages(element, images);
      }
    }
  }

  async function refresh() {
    try {
      const response = await fetch(source, {credentials: "same-origin", cache: "no-store"});
      const state = await response.json();
      if (!response.ok) {
        throw new Error(state.error || response.status + " " + response.statusText);
      }
      show(state);
      updated.textContent = "as of " + state.fields.now + " UTC";
      updated.classList.remove("stale");
    } catch (error) {
      updated.textContent = "not updated: " + error.message;
      updated.classList.add("stale");
    } finally {
      window.setTimeout(refresh, pollMs);
    }
  }

  window.setTimeout(refresh, pollMs);
})();
